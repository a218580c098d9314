/* postern: the command-line client. Subcommands arrive with their issues
 * (tunnel, login, user, audit, recording); this is the entry point. */
#include <stdio.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: postern --version\n");
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        printf("postern %s\n", POSTERN_VERSION);
        return 0;
    }
    usage(argc == 2 && strcmp(argv[1], "--help") == 0 ? stdout : stderr);
    return argc == 2 && strcmp(argv[1], "--help") == 0 ? 0 : 2;
}
