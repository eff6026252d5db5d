/* placeholder main until the CLI lands (owned by the model/eval/CLI work) */
#include <stdio.h>
int main(void) { fprintf(stderr, "sqz: not built yet\n"); return 1; }
