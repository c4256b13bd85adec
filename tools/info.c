/* info.c: `mamba-dna info [MODEL_DIR]`: what a model folder holds (architecture, variant, sizes,
 * vocabulary, parameter count from the parameter table, dtypes and sha256 of model.safetensors),
 * as aligned text or, with --json, one JSON object on stdout. The weights are also checked
 * against the parameter table (shapes, every key, finite values) as the model commands load
 * them, so a folder that info accepts is one that embed/predict/score can load. */
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "md.h"
#include "params.h"
#include "pipeline.h"

enum { OPT_JSON = CLI_OPT_FIRST_CMD, OPT_NO_SHA };

static void usage(FILE *fp, const cli_common_t *c)
{
    fprintf(fp, "Usage: mamba-dna info [options] [MODEL_DIR]\n\n");
    fprintf(fp, "Describes a model folder (config.json + model.safetensors): architecture, variant,\n"
                "sizes, vocabulary, parameter count, dtypes, trained length and sha256.\n"
                "MODEL_DIR defaults to -m, then $MAMBA_DNA_MODEL, then the default model.\n\n");
    fprintf(fp, "Options:\n");
    fprintf(fp, "  -m, --model DIR       model folder [%s]\n",
            c->model ? c->model : "$MAMBA_DNA_MODEL, else models/default");
    fprintf(fp, "      --json            one JSON object instead of text\n");
    fprintf(fp, "      --no-sha256       skip hashing model.safetensors\n");
    fprintf(fp, "  -v, --verbose         log more; print the run summary\n");
    fprintf(fp, "  -h, --help            print this help and exit\n");
}

static int print_json(const char *dir, const pl_model_info_t *in)
{
    const md_config_t *c = &in->cfg;
    json_t *o = json_object();
    if (!o) return CLI_EINTERNAL;
    json_object_set_new(o, "path", json_string(dir));
    json_object_set_new(o, "architecture", json_string(in->architecture));
    json_object_set_new(o, "model_type", in->model_type[0] ? json_string(in->model_type) : json_null());
    json_object_set_new(o, "variant", json_string(in->variant));
    json_object_set_new(o, "d_model", json_integer(c->d_model));
    json_object_set_new(o, "n_layer", json_integer(c->n_layer));
    json_object_set_new(o, "d_inner", json_integer(c->d_inner));
    json_object_set_new(o, "d_state", json_integer(c->d_state));
    json_object_set_new(o, "d_conv", json_integer(c->d_conv));
    json_object_set_new(o, "dt_rank", json_integer(c->dt_rank));
    json_object_set_new(o, "hidden_width", json_integer(c->rcps ? 2 * c->d_model : c->d_model));
    json_object_set_new(o, "vocab_size", json_integer(c->vocab_size_orig));
    json_object_set_new(o, "vocab_size_padded", json_integer(c->vocab_size));
    json_object_set_new(o, "tokenizer", json_string(c->tokenizer));
    json_object_set_new(o, "bidirectional", json_boolean(c->bidirectional));
    if (c->bidirectional) {
        json_object_set_new(o, "bidirectional_strategy",
                            json_string(c->bidir_strategy == MD_BIDIR_ADD ? "add" : "ew_multiply"));
        json_object_set_new(o, "bidirectional_weight_tie", json_boolean(c->bidir_weight_tie));
    }
    json_object_set_new(o, "rcps", json_boolean(c->rcps));
    json_object_set_new(o, "norm", json_string(c->rms_norm ? "RMSNorm" : "LayerNorm"));
    char eps[32];
    snprintf(eps, sizeof eps, "%.7g", c->norm_eps);
    json_object_set_new(o, "norm_epsilon", json_real(atof(eps)));
    json_object_set_new(o, "fused_add_norm", json_boolean(c->fused_add_norm));
    json_object_set_new(o, "residual_in_fp32", json_boolean(c->residual_in_fp32));
    json_object_set_new(o, "parameters", json_integer(in->n_params));
    json_object_set_new(o, "file_elements", json_integer(in->n_params_file));
    json_object_set_new(o, "file_tensors", json_integer(in->n_tensors));
    json_object_set_new(o, "file_bytes", json_integer(in->file_bytes));
    json_t *dt = json_array();
    char tmp[sizeof in->dtypes];
    snprintf(tmp, sizeof tmp, "%s", in->dtypes);
    for (char *s = strtok(tmp, ","); s; s = strtok(NULL, ",")) json_array_append_new(dt, json_string(s));
    json_object_set_new(o, "dtypes", dt);
    json_object_set_new(o, "trained_length", c->max_seq_len > 0 ? json_integer(c->max_seq_len) : json_null());
    json_object_set_new(o, "sha256", in->sha256[0] ? json_string(in->sha256) : json_null());
    json_object_set_new(o, "mamba_dna_version", json_string(MD_VERSION));
    char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!s) return CLI_EINTERNAL;
    puts(s);
    free(s);
    return 0;
}

static void print_text(const char *dir, const pl_model_info_t *in)
{
    const md_config_t *c = &in->cfg;
#define ROW(k, ...) (printf("%-16s", k), printf(__VA_ARGS__), putchar('\n'))
    ROW("path", "%s", dir);
    ROW("architecture", "%s%s%s%s", in->architecture, in->model_type[0] ? " (model_type " : "",
        in->model_type, in->model_type[0] ? ")" : "");
    ROW("variant", "%s", in->variant);
    ROW("d_model", "%d", c->d_model);
    ROW("n_layer", "%d", c->n_layer);
    ROW("d_inner", "%d", c->d_inner);
    ROW("d_state", "%d", c->d_state);
    ROW("d_conv", "%d", c->d_conv);
    ROW("dt_rank", "%d", c->dt_rank);
    ROW("hidden_width", "%d%s", c->rcps ? 2 * c->d_model : c->d_model,
        c->rcps ? " (two RC-equivariant halves of d_model)" : "");
    ROW("vocab", "%d (padded %d)", c->vocab_size_orig, c->vocab_size);
    ROW("tokenizer", "%s", c->tokenizer);
    if (c->bidirectional)
        ROW("bidirectional", "yes (%s%s)", c->bidir_strategy == MD_BIDIR_ADD ? "add" : "ew_multiply",
            c->bidir_weight_tie ? ", weight-tied in/out projections" : "");
    else
        ROW("bidirectional", "no (causal)");
    ROW("norm", "%s eps=%g%s%s", c->rms_norm ? "RMSNorm" : "LayerNorm", c->norm_eps,
        c->fused_add_norm ? ", fused add-norm" : "", c->residual_in_fp32 ? ", residual in fp32" : "");
    ROW("parameters", "%lld (unique, from the parameter table)", (long long)in->n_params);
    ROW("weights_file", "model.safetensors: %lld bytes, %d tensors, %lld elements",
        (long long)in->file_bytes, in->n_tensors, (long long)in->n_params_file);
    ROW("dtypes", "%s", in->dtypes[0] ? in->dtypes : "-");
    if (c->max_seq_len > 0) ROW("trained_length", "%d", c->max_seq_len);
    else ROW("trained_length", "unknown");
    ROW("sha256", "%s", in->sha256[0] ? in->sha256 : "(not computed)");
#undef ROW
}

int main_info(int argc, char *argv[], const cli_run_t *run)
{
    static const struct option lopts[] = {
        { "model", required_argument, 0, 'm' },
        { "json", no_argument, 0, OPT_JSON },
        { "no-sha256", no_argument, 0, OPT_NO_SHA },
        { "verbose", no_argument, 0, 'v' },
        { "help", no_argument, 0, 'h' },
        { 0, 0, 0, 0 },
    };
    cli_common_t com;
    cli_common_init(&com);
    int json = 0, sha = 1, c;
    (void)run;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":m:vh", lopts, NULL)) >= 0) {
        if (c == 'h') {
            usage(stdout, &com);
            return 0;
        } else if (c == OPT_JSON) {
            json = 1;
        } else if (c == OPT_NO_SHA) {
            sha = 0;
        } else if (c == ':' || c == '?') {
            return cli_getopt_error("info", c, argc, argv);
        } else {
            int r = cli_common_opt(&com, "info", c, optarg);
            if (r < 0) return CLI_EUSAGE;
        }
    }
    if (argc - optind > 1) return cli_usage_error("info", "expected one MODEL_DIR, got %d", argc - optind);
    if (argc - optind == 1) {
        if (com.model) return cli_usage_error("info", "give the model either with -m or as MODEL_DIR, not both");
        com.model = argv[optind];
    }
    char dir[PATH_MAX];
    if (cli_find_model("info", com.model, dir, sizeof dir, com.verbose) < 0) return CLI_EDATA;
    pl_model_info_t in;
    int ret = pl_model_describe(dir, sha, &in);
    if (ret < 0) return ret == PL_EDATA ? CLI_EDATA : CLI_EINTERNAL;
    /* a description of weights that do not match config.json would mislead: load them */
    md_weights_t *w = md_weights_alloc(&in.cfg);
    if (!w) return CLI_EINTERNAL;
    char wpath[PATH_MAX + 32];
    snprintf(wpath, sizeof wpath, "%s/model.safetensors", dir);
    ret = md_weights_load(w, wpath);
    md_weights_free(w);
    if (ret < 0) {
        fprintf(stderr, "[E::info] %s: the weights do not load with its config.json: %s\n", dir,
                md_last_error());
        return CLI_EDATA;
    }
    if (json) return print_json(dir, &in);
    print_text(dir, &in);
    return 0;
}
