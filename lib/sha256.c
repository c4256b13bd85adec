/* sha256.c: SHA-256 of a file as lowercase hex, through OpenSSL's EVP interface (libcrypto). */
#include <openssl/evp.h>
#include <stdio.h>

#include "md.h"

int md_sha256_file(const char *path, char hex[65])
{
    FILE *fp = fopen(path, "rb");
    if (!fp) { md_error("%s: cannot open for hashing", path); return -2; }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ret = -2;
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) { md_error("%s: sha256 init failed", path); goto out; }
    unsigned char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, fp)) > 0)
        if (EVP_DigestUpdate(ctx, buf, n) != 1) { md_error("%s: sha256 update failed", path); goto out; }
    if (ferror(fp)) { md_error("%s: read error while hashing", path); goto out; }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(ctx, md, &len) != 1) { md_error("%s: sha256 final failed", path); goto out; }
    for (unsigned int i = 0; i < len && i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
    hex[64] = 0;
    ret = 0;
out:
    EVP_MD_CTX_free(ctx);
    fclose(fp);
    return ret;
}
