/* SHA-256 against the FIPS 180-2 test vectors (Appendix B) and the NIST short-message examples. */
#include "tests/test.h"

#include "core/sha256.h"

TEST(sha256_fips_vectors)
{
    char hex[SHA256_HEX_SIZE];
    sha256_hex("abc", 3, hex);
    CHECK_STR_EQ(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    sha256_hex(NULL, 0, hex);
    CHECK_STR_EQ(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha256_hex(two, strlen(two), hex);
    CHECK_STR_EQ(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    const char *four = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
                       "ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    sha256_hex(four, strlen(four), hex);
    CHECK_STR_EQ(hex, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

TEST(sha256_million_a_in_uneven_chunks)
{
    /* Appendix B.3: one million 'a'. Fed in chunks of varying size to exercise the block buffer. */
    static char buf[1000];
    memset(buf, 'a', sizeof buf);
    sha256_ctx c;
    sha256_init(&c);
    size_t done = 0, step = 1;
    while (done < 1000000) {
        size_t n = step < 1000000 - done ? step : 1000000 - done;
        sha256_update(&c, buf, n);
        done += n;
        step = step % 990 + 7; /* at most 996, within buf */
    }
    uint8_t d[SHA256_DIGEST_SIZE];
    char hex[SHA256_HEX_SIZE];
    sha256_final(&c, d);
    sha256_digest_to_hex(d, hex);
    CHECK_STR_EQ(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(sha256_padding_boundaries_match_one_shot)
{
    /* Lengths around 55, 56 and 64 bytes change how the padding is laid out; byte-at-a-time updates
     * must agree with the one-shot call for all of them. */
    char data[130];
    for (int i = 0; i < 130; i++) data[i] = (char)(i * 7 + 1);
    for (size_t n = 0; n <= 130; n++) {
        char one[SHA256_HEX_SIZE], inc[SHA256_HEX_SIZE];
        sha256_hex(data, n, one);
        sha256_ctx c;
        uint8_t d[SHA256_DIGEST_SIZE];
        sha256_init(&c);
        for (size_t i = 0; i < n; i++) sha256_update(&c, data + i, 1);
        sha256_final(&c, d);
        sha256_digest_to_hex(d, inc);
        CHECK_STR_EQ(one, inc);
    }
    /* 56 'a': known value from independent implementations. */
    char a56[56];
    memset(a56, 'a', 56);
    char hex[SHA256_HEX_SIZE];
    sha256_hex(a56, 56, hex);
    CHECK_STR_EQ(hex, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a");
    CHECK(sha256_hex_valid(hex));
    CHECK(!sha256_hex_valid("abc"));
    hex[3] = 'A';
    CHECK(!sha256_hex_valid(hex));
}
