/* wal.h: the write-ahead log of one shard.
 *
 * A log is a directory of files named by the log sequence number (LSN) of
 * their first record (%020llu.wal). A record is opaque bytes framed by a
 * header holding a magic, its length, its LSN and a CRC-32C; LSNs start at 1
 * and increase by one per record with no gaps.
 *
 * Appends are serialised by the caller (the shard's write lock); wal_sync is
 * called without that lock by any number of threads and shares fsyncs among
 * them (group commit): one leader fsyncs everything written so far while the
 * others wait for it.
 *
 * After a failed write or fsync the log refuses appends and syncs
 * (QV_ECLOSED) until it is reopened: what was written may or may not be on
 * disk, and recovery decides. */
#ifndef QV_STORAGE_WAL_H
#define QV_STORAGE_WAL_H

#include <stddef.h>
#include <stdint.h>

#include "quiver.h"

typedef struct wal wal;

/* Opens the log in `dir` (created if missing) and verifies every record.
 * An incomplete or checksum-failing record with no valid record after it in
 * the newest file is a torn tail from a crash: it is cut off (the file is
 * truncated) and logged. Damage followed by valid records, a gap in LSNs or a
 * damaged older file is QV_ECORRUPT naming the file and offset.
 * `min_next_lsn` (>= 1): the next LSN is at least this (the shard's
 * checkpoint, for a log whose files were all dropped). If the log ends below
 * it, every record in it is covered by the checkpoint: its files are removed
 * and a new log starts at min_next_lsn (see README.md). */
qv_rc wal_open(const char *dir, uint64_t min_next_lsn, wal **out, qv_err *err);
void wal_close(wal *w); /* accepts NULL; does not fsync */

/* `rec` points into a read-only mapping of the file, valid only during the
 * call. fn must not call back into the log. */
typedef qv_rc (*wal_replay_fn)(void *ctx, uint64_t lsn, const void *rec,
                               size_t len, qv_err *err);
/* Calls fn for every record with LSN >= from_lsn, in LSN order; stops at and
 * returns the first error fn returns. */
qv_rc wal_replay(wal *w, uint64_t from_lsn, wal_replay_fn fn, void *ctx,
                 qv_err *err);

/* Appends one record (len >= 1, <= WAL_RECORD_MAX) and assigns it the next
 * LSN. The bytes are handed to the OS but not fsynced: call wal_sync. */
#define WAL_RECORD_MAX (1u << 30)
qv_rc wal_append(wal *w, const void *rec, size_t len, uint64_t *lsn,
                 qv_err *err);

/* Returns when every record up to `lsn` is durable. Thread-safe. */
qv_rc wal_sync(wal *w, uint64_t lsn, qv_err *err);

uint64_t wal_next_lsn(const wal *w);    /* LSN the next append gets */
/* LSN of the oldest record in the log, or wal_next_lsn when it is empty. */
uint64_t wal_first_lsn(wal *w);
uint64_t wal_durable_lsn(const wal *w); /* highest fsynced LSN, 0 if none */

/* Starts a new file at the next LSN (after fsyncing the current one), so that
 * older files can later be dropped whole. Serialised with appends. */
qv_rc wal_rotate(wal *w, qv_err *err);

/* Deletes the files all of whose records have LSN < lsn. */
qv_rc wal_drop_before(wal *w, uint64_t lsn, qv_err *err);

uint64_t wal_bytes(const wal *w); /* bytes of log on disk */

/* Calls fn for each log file, oldest first, with its path, the LSN of its
 * first record and the bytes of whole records in it at the time of the call
 * (a snapshot copies exactly those bytes). The caller must keep appends and
 * wal_drop_before from running meanwhile if it needs the list to stay
 * true. */
typedef qv_rc (*wal_file_fn)(void *ctx, const char *path, uint64_t first_lsn,
                             uint64_t bytes, qv_err *err);
qv_rc wal_list_files(wal *w, wal_file_fn fn, void *ctx, qv_err *err);

/* ---- added for tests, fuzzers and metrics -------------------------------- */

/* Bytes of the frame header before each record's payload (magic u32,
 * length u32, LSN u64, CRC-32C u32, little-endian); see README.md. */
#define WAL_HEADER_BYTES 20u

/* fsyncs of log files this handle has issued (syncs, rotations, the one at
 * open), so tests can see that concurrent wal_sync calls share them. */
uint64_t wal_fsync_count(const wal *w);

/* Test hook: the leader of a group commit calls fn(ctx) after it has taken
 * the leader role and released the lock, just before its fsync, so a test can
 * line up waiters behind it. NULL removes it. Not for production use. */
typedef void (*wal_sync_hook_fn)(void *ctx);
void wal_set_sync_hook(wal *w, wal_sync_hook_fn fn, void *ctx);

/* Threads currently blocked in wal_sync waiting for another's fsync. */
unsigned wal_sync_waiters(const wal *w);

#endif
