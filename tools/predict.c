/* predict.c: `mamba-dna predict IN...`: per-base probabilities of A, C, G, T (or raw logits) from
 * the model's LM head. Options and flow are shared with embed (cli_seq_cmd in embed.c); the
 * strand averaging and the softmax over the four bases are in lib/pipeline.c. */
#include "cli.h"

int main_predict(int argc, char *argv[], const cli_run_t *run)
{
    return cli_seq_cmd(1, argc, argv, run);
}
