/* cli: `pake <command>` entry point; each command parses its flags (and PAKE_* env vars) and wires the
 * modules together. */
#ifndef PAKE_CLI_CLI_H
#define PAKE_CLI_CLI_H
int pk_cli_main(int argc, char **argv);
#endif
