/* test_server_sha256.c: src/server/sha256.c against the example vectors of FIPS
 * 180-4 (and its 10^6 x 'a' vector), against coreutils' sha256sum for every
 * length around the padding boundaries, and with the input split at every
 * point. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "server/sha256.h"
#include "testutil.h"

static void hex_of(const void *p, size_t n, char out[65]) {
  sha256_ctx c;
  uint8_t d[32];
  sha256_init(&c);
  sha256_update(&c, p, n);
  sha256_final(&c, d);
  sha256_hex(d, out);
}

Test(sha256, fips_180_example_vectors) {
  static const struct {
    const char *msg, *digest;
  } v[] = {
      {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
      {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
      {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
      {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqr"
       "lmnopqrsmnopqrstnopqrstu",
       "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
  };
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
    char hex[65];
    hex_of(v[i].msg, strlen(v[i].msg), hex);
    cr_expect_str_eq(hex, v[i].digest, "message %zu", i);
  }
}

Test(sha256, one_million_a) {
  char *m = malloc(1000000);
  memset(m, 'a', 1000000);
  char hex[65];
  hex_of(m, 1000000, hex);
  cr_expect_str_eq(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  free(m);
}

Test(sha256, split_updates_give_the_same_digest) {
  uint8_t msg[300];
  for (size_t i = 0; i < sizeof msg; i++) msg[i] = (uint8_t)(i * 131 + 7);
  char whole[65];
  hex_of(msg, sizeof msg, whole);
  for (size_t cut = 0; cut <= sizeof msg; cut++) {
    sha256_ctx c;
    uint8_t d[32];
    char hex[65];
    sha256_init(&c);
    sha256_update(&c, msg, cut);
    for (size_t i = cut; i < sizeof msg; i += 7)
      sha256_update(&c, msg + i, sizeof msg - i < 7 ? sizeof msg - i : 7);
    sha256_final(&c, d);
    sha256_hex(d, hex);
    cr_assert_str_eq(hex, whole, "cut at %zu", cut);
  }
}

/* Every length from 0 to 200 bytes crosses the 55/56/64-byte padding cases;
 * coreutils' sha256sum is the reference. Also checks sha256_file. */
Test(sha256, file_digests_match_sha256sum_for_lengths_0_to_200) {
  char *dir = tu_tmpdir("sha256");
  char path[512], cmd[700];
  snprintf(path, sizeof path, "%s/f", dir);
  for (size_t n = 0; n <= 200; n++) {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    for (size_t i = 0; i < n; i++) fputc((int)((i * 37 + n) & 0xff), f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "sha256sum '%s'", path);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    char want[65] = {0};
    cr_assert_eq(fscanf(p, "%64s", want), 1);
    pclose(p);
    char got[65];
    qv_err err = {0};
    cr_assert_eq(sha256_file(path, got, &err), QV_OK, "%s", err.msg);
    cr_assert_str_eq(got, want, "length %zu", n);
  }
  tu_rmdir(dir);
}

Test(sha256, missing_file_is_eio) {
  char hex[65];
  qv_err err = {0};
  cr_expect_eq(sha256_file("/nonexistent/qv-sha", hex, &err), QV_EIO);
  cr_expect(strstr(err.msg, "/nonexistent/qv-sha") != NULL, "%s", err.msg);
}
