#include "cli/cli.h"

int main(int argc, char **argv)
{
    return pk_cli_main(argc, argv);
}
