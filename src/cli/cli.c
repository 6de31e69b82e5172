#include "cli/cli.h"
#include <stdio.h>
int pk_cli_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    puts("pake " PAKE_VERSION);
    return 0;
}
