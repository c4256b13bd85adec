/* dist.c: data-parallel groups (dist.h). The NCCL group declares the few NCCL C API types and
 * functions it uses (from NVIDIA's public NCCL documentation) and loads them with dlopen, so the
 * build needs no NCCL headers or library: only the GPU machine has libnccl.so.2. Every NCCL
 * all-reduce is queued on the CUDA backend's stream and then waited for by polling the stream
 * and ncclCommGetAsyncError, never by a blocking synchronize, so a failed peer surfaces as an
 * error (or the launcher stops this process) instead of a hang. The threads group sums host
 * buffers in rank order behind a barrier that an aborting rank can break. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dist.h"
#include "md.h"

uint64_t md_dist_seq_index(int64_t step, int nranks, int rank, int accum, int batch, int micro, int row)
{
    return (((uint64_t)step * (uint64_t)nranks + (uint64_t)rank) * (uint64_t)accum + (uint64_t)micro) *
               (uint64_t)batch + (uint64_t)row;
}

/* ---- NCCL API (declared from the NCCL documentation; values are part of its stable ABI) ----- */

typedef struct { char internal[MD_NCCL_ID_BYTES]; } nccl_unique_id_t;   /* ncclUniqueId */
typedef struct nccl_comm *nccl_comm_t;                                  /* ncclComm_t */
typedef enum {
    NCCL_SUCCESS = 0, NCCL_UNHANDLED_CUDA_ERROR = 1, NCCL_SYSTEM_ERROR = 2, NCCL_INTERNAL_ERROR = 3,
    NCCL_INVALID_ARGUMENT = 4, NCCL_INVALID_USAGE = 5, NCCL_REMOTE_ERROR = 6, NCCL_IN_PROGRESS = 7
} nccl_result_t;
typedef enum { NCCL_FLOAT32 = 7, NCCL_FLOAT64 = 8, NCCL_BFLOAT16 = 9 } nccl_dtype_t;
typedef enum { NCCL_SUM = 0, NCCL_AVG = 4 } nccl_op_t;

typedef struct {
    void *lib;
    nccl_result_t (*get_version)(int *version);
    nccl_result_t (*get_unique_id)(nccl_unique_id_t *id);
    nccl_result_t (*comm_init_rank)(nccl_comm_t *comm, int nranks, nccl_unique_id_t id, int rank);
    nccl_result_t (*all_reduce)(const void *send, void *recv, size_t count, nccl_dtype_t type, nccl_op_t op,
                                nccl_comm_t comm, void *stream);
    nccl_result_t (*comm_destroy)(nccl_comm_t comm);
    nccl_result_t (*comm_abort)(nccl_comm_t comm);
    nccl_result_t (*comm_get_async_error)(nccl_comm_t comm, nccl_result_t *err);
    const char *(*get_error_string)(nccl_result_t r);
    const char *(*get_last_error)(nccl_comm_t comm);   /* NCCL >= 2.13; may be NULL */
    char path[1024];
} nccl_api_t;

static void nccl_unload(nccl_api_t *a)
{
    if (a->lib) dlclose(a->lib);
    memset(a, 0, sizeof *a);
}

static int nccl_load(nccl_api_t *a)
{
    memset(a, 0, sizeof *a);
    const char *env = getenv("MD_NCCL_LIB");
    const char *name = env && *env ? env : "libnccl.so.2";
    a->lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (!a->lib) {
        const char *why = dlerror();
        md_error("cannot load NCCL from '%s': %s (install NCCL, e.g. the nvidia-nccl-cu* wheel or libnccl2, or point "
                 "MD_NCCL_LIB at libnccl.so.2)", name, why ? why : "?");
        return -2;
    }
    struct { const char *sym; void **fn; int optional; } syms[] = {
        { "ncclGetVersion", (void **)&a->get_version, 0 },
        { "ncclGetUniqueId", (void **)&a->get_unique_id, 0 },
        { "ncclCommInitRank", (void **)&a->comm_init_rank, 0 },
        { "ncclAllReduce", (void **)&a->all_reduce, 0 },
        { "ncclCommDestroy", (void **)&a->comm_destroy, 0 },
        { "ncclCommAbort", (void **)&a->comm_abort, 0 },
        { "ncclCommGetAsyncError", (void **)&a->comm_get_async_error, 0 },
        { "ncclGetErrorString", (void **)&a->get_error_string, 0 },
        { "ncclGetLastError", (void **)&a->get_last_error, 1 },
    };
    for (size_t i = 0; i < sizeof syms / sizeof *syms; i++) {
        *syms[i].fn = dlsym(a->lib, syms[i].sym);
        if (!*syms[i].fn && !syms[i].optional) {
            md_error("%s: no symbol %s (not an NCCL 2 library?)", name, syms[i].sym);
            nccl_unload(a);
            return -2;
        }
    }
    Dl_info info;
    if (dladdr((void *)a->get_version, &info) && info.dli_fname) snprintf(a->path, sizeof a->path, "%s", info.dli_fname);
    else snprintf(a->path, sizeof a->path, "%s", name);
    return 0;
}

/* NVLink multicast (NVLS) stays off unless the user set it: the lent machines require it. */
static void nccl_env_defaults(void)
{
    if (!getenv("NCCL_NVLS_ENABLE")) setenv("NCCL_NVLS_ENABLE", "0", 0);
}

/* "<NCCL's name for r>: <its last message>" into buf. */
static const char *nccl_why(const nccl_api_t *a, nccl_comm_t comm, nccl_result_t r, char *buf, size_t n)
{
    const char *last = a->get_last_error ? a->get_last_error(comm) : NULL;
    snprintf(buf, n, "%s%s%s", a->get_error_string(r), last && *last ? ": " : "", last && *last ? last : "");
    return buf;
}

int md_nccl_probe(char *where, size_t n)
{
    nccl_api_t a;
    if (nccl_load(&a) < 0) return -2;
    int v = 0;
    a.get_version(&v);
    /* NCCL >= 2.9 encodes x.y.z as x*10000 + y*100 + z; older ones as x*1000 + y*100 + z */
    int major = v >= 20900 ? v / 10000 : v / 1000, minor = v >= 20900 ? v / 100 % 100 : v / 100 % 10;
    snprintf(where, n, "%s (NCCL %d.%d.%d)", a.path, major, minor, v % 100);
    nccl_unload(&a);
    return 0;
}

int md_nccl_unique_id(unsigned char id[MD_NCCL_ID_BYTES])
{
    nccl_api_t a;
    nccl_env_defaults();
    if (nccl_load(&a) < 0) return -2;
    nccl_unique_id_t u;
    nccl_result_t r = a.get_unique_id(&u);
    if (r != NCCL_SUCCESS) {
        char why[512];
        md_error("ncclGetUniqueId failed: %s", nccl_why(&a, NULL, r, why, sizeof why));
        nccl_unload(&a);
        return -2;
    }
    memcpy(id, u.internal, MD_NCCL_ID_BYTES);
    /* the library stays loaded in this process (NCCL keeps state from the id for init) */
    a.lib = NULL;
    return 0;
}

#ifdef MD_WITH_CUDA

typedef struct {
    nccl_api_t api;
    nccl_comm_t comm;
    md_backend_t *be;
    void *stream;
    double *scratch;   /* [MD_DIST_MAX_HOST] device doubles for the host sums */
} nccl_ctx_t;

/* Waits, without blocking in CUDA, until the backend's stream is idle; fails on an NCCL
 * asynchronous error (the communicator is then aborted). */
static int nccl_wait(md_dist_t *d, const char *what)
{
    nccl_ctx_t *c = d->ctx;
    const struct timespec nap = { 0, 20000 };
    for (;;) {
        int q = md_cuda_backend_poll(c->be);
        if (q < 0) return -2;
        if (q == 1) return 0;
        nccl_result_t st = NCCL_SUCCESS, r = c->api.comm_get_async_error(c->comm, &st);
        if (r != NCCL_SUCCESS || (st != NCCL_SUCCESS && st != NCCL_IN_PROGRESS)) {
            char why[512];
            md_error("rank %d of %d: NCCL %s failed: %s", d->rank, d->nranks, what,
                     nccl_why(&c->api, c->comm, r != NCCL_SUCCESS ? r : st, why, sizeof why));
            c->api.comm_abort(c->comm);
            c->comm = NULL;
            return -2;
        }
        nanosleep(&nap, NULL);
    }
}

static int nccl_sum(md_dist_t *d, void *buf, size_t n, nccl_dtype_t type, const char *what)
{
    nccl_ctx_t *c = d->ctx;
    if (!c->comm) { md_error("rank %d: the NCCL group was aborted after an earlier error", d->rank); return -2; }
    nccl_result_t r = c->api.all_reduce(buf, buf, n, type, NCCL_SUM, c->comm, c->stream);
    if (r != NCCL_SUCCESS && r != NCCL_IN_PROGRESS) {
        char why[512];
        md_error("rank %d of %d: ncclAllReduce (%s, %zu values) failed: %s", d->rank, d->nranks, what, n,
                 nccl_why(&c->api, c->comm, r, why, sizeof why));
        return -2;
    }
    return nccl_wait(d, what);
}

static int nccl_sum_f32(md_dist_t *d, float *buf, size_t n)
{
    return nccl_sum(d, buf, n, NCCL_FLOAT32, "gradient all-reduce");
}

static int nccl_sum_host_f64(md_dist_t *d, double *buf, int n)
{
    nccl_ctx_t *c = d->ctx;
    if (n < 0 || n > MD_DIST_MAX_HOST) { md_error("%d values (at most %d)", n, MD_DIST_MAX_HOST); return -2; }
    if (c->be->upload(c->be, c->scratch, buf, n * sizeof *buf) < 0) return -2;
    if (nccl_sum(d, c->scratch, n, NCCL_FLOAT64, "statistics all-reduce") < 0) return -2;
    return c->be->download(c->be, buf, c->scratch, n * sizeof *buf);
}

static void nccl_abort(md_dist_t *d)
{
    nccl_ctx_t *c = d->ctx;
    if (c->comm) c->api.comm_abort(c->comm);
    c->comm = NULL;
}

static void nccl_destroy(md_dist_t *d)
{
    if (!d) return;
    nccl_ctx_t *c = d->ctx;
    if (c) {
        if (c->comm) c->api.comm_destroy(c->comm);
        if (c->scratch) c->be->free(c->be, c->scratch);
        /* NCCL keeps threads that use the library until the process ends: never unload it */
        free(c);
    }
    free(d);
}

md_dist_t *md_dist_nccl_create(md_backend_t *be, const unsigned char id[MD_NCCL_ID_BYTES], int rank, int nranks)
{
    if (!be || strcmp(be->name, "cuda") != 0) {
        md_error("NCCL needs the CUDA backend (-d cuda), not '%s'", be ? be->name : "none");
        return NULL;
    }
    if (nranks < 1 || rank < 0 || rank >= nranks) { md_error("rank %d of %d", rank, nranks); return NULL; }
    nccl_env_defaults();
    md_dist_t *d = md_calloc(1, sizeof *d);
    nccl_ctx_t *c = md_calloc(1, sizeof *c);
    if (!d || !c) { free(d); free(c); return NULL; }
    d->ctx = c;
    d->rank = rank;
    d->nranks = nranks;
    d->kind = "nccl";
    d->sum_f32 = nccl_sum_f32;
    d->sum_host_f64 = nccl_sum_host_f64;
    d->abort = nccl_abort;
    d->destroy = nccl_destroy;
    c->be = be;
    c->stream = md_cuda_backend_stream(be);
    if (nccl_load(&c->api) < 0) goto fail;
    if (!(c->scratch = be->alloc(be, MD_DIST_MAX_HOST * sizeof(double)))) goto fail;
    nccl_unique_id_t u;
    memcpy(u.internal, id, MD_NCCL_ID_BYTES);
    nccl_result_t r = c->api.comm_init_rank(&c->comm, nranks, u, rank);
    if (r != NCCL_SUCCESS) {
        char why[512];
        md_error("rank %d of %d: ncclCommInitRank failed: %s (NCCL_DEBUG=WARN shows NCCL's own messages)", rank, nranks,
                 nccl_why(&c->api, c->comm, r, why, sizeof why));
        c->comm = NULL;
        goto fail;
    }
    md_info("rank %d of %d joined the NCCL group (%s)", rank, nranks, c->api.path);
    return d;
fail:
    nccl_destroy(d);
    return NULL;
}

#else

md_dist_t *md_dist_nccl_create(md_backend_t *be, const unsigned char id[MD_NCCL_ID_BYTES], int rank, int nranks)
{
    (void)be; (void)id; (void)rank; (void)nranks;
    md_error("multi-GPU training: built without CUDA (rebuild with nvcc available, CUDA=1)");
    return NULL;
}

#endif

/* ---- threads ---------------------------------------------------------------------------------- */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n, arrived, aborted, live;
    unsigned generation;
    void **bufs;   /* [n] each rank's buffer of the sum under way */
} tgroup_t;

/* All n ranks meet; -2 when a rank aborted the group. */
static int tgroup_barrier(tgroup_t *g)
{
    pthread_mutex_lock(&g->mu);
    int ret = 0;
    if (g->aborted) ret = -2;
    else {
        unsigned gen = g->generation;
        if (++g->arrived == g->n) {
            g->arrived = 0;
            g->generation++;
            pthread_cond_broadcast(&g->cv);
        } else {
            while (gen == g->generation && !g->aborted) pthread_cond_wait(&g->cv, &g->mu);
            if (gen == g->generation) ret = -2;
        }
    }
    pthread_mutex_unlock(&g->mu);
    return ret;
}

static int threads_sum(md_dist_t *d, void *buf, size_t n, int f64)
{
    tgroup_t *g = d->ctx;
    const size_t es = f64 ? sizeof(double) : sizeof(float);
    void *tmp = md_malloc(n * es);
    if (!tmp) { d->abort(d); return -2; }
    g->bufs[d->rank] = buf;
    int ret = -2;
    if (tgroup_barrier(g) < 0) goto aborted;
    for (size_t i = 0; i < n; i++) {   /* rank order: the same sum on every rank */
        if (f64) {
            double s = ((double *)g->bufs[0])[i];
            for (int r = 1; r < g->n; r++) s += ((double *)g->bufs[r])[i];
            ((double *)tmp)[i] = s;
        } else {
            float s = ((float *)g->bufs[0])[i];
            for (int r = 1; r < g->n; r++) s += ((float *)g->bufs[r])[i];
            ((float *)tmp)[i] = s;
        }
    }
    if (tgroup_barrier(g) < 0) goto aborted;   /* nobody reads the buffers any more */
    memcpy(buf, tmp, n * es);
    ret = 0;
    goto out;
aborted:
    md_error("rank %d of %d: another rank of the group failed", d->rank, d->nranks);
out:
    free(tmp);
    return ret;
}

static int threads_sum_f32(md_dist_t *d, float *buf, size_t n) { return threads_sum(d, buf, n, 0); }

static int threads_sum_host_f64(md_dist_t *d, double *buf, int n)
{
    if (n < 0 || n > MD_DIST_MAX_HOST) { md_error("%d values (at most %d)", n, MD_DIST_MAX_HOST); return -2; }
    return threads_sum(d, buf, (size_t)n, 1);
}

static void threads_abort(md_dist_t *d)
{
    tgroup_t *g = d->ctx;
    pthread_mutex_lock(&g->mu);
    g->aborted = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void threads_destroy(md_dist_t *d)
{
    if (!d) return;
    tgroup_t *g = d->ctx;
    pthread_mutex_lock(&g->mu);
    int last = --g->live == 0;
    pthread_mutex_unlock(&g->mu);
    if (last) {
        pthread_mutex_destroy(&g->mu);
        pthread_cond_destroy(&g->cv);
        free(g->bufs);
        free(g);
    }
    free(d);
}

int md_dist_threads_create(int n, md_dist_t **members)
{
    if (n < 1 || n > 4096) { md_error("%d ranks (1..4096)", n); return -2; }
    tgroup_t *g = md_calloc(1, sizeof *g);
    if (!g) return -2;
    if (!(g->bufs = md_calloc(n, sizeof *g->bufs))) { free(g); return -2; }
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->n = n;
    for (int r = 0; r < n; r++) {
        md_dist_t *d = md_calloc(1, sizeof *d);
        if (!d) {
            for (int k = 0; k < r; k++) free(members[k]);
            pthread_mutex_destroy(&g->mu);
            pthread_cond_destroy(&g->cv);
            free(g->bufs);
            free(g);
            return -2;
        }
        d->rank = r;
        d->nranks = n;
        d->kind = "threads";
        d->sum_f32 = threads_sum_f32;
        d->sum_host_f64 = threads_sum_host_f64;
        d->abort = threads_abort;
        d->destroy = threads_destroy;
        d->ctx = g;
        members[r] = d;
    }
    g->live = n;
    return 0;
}
