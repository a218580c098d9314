/* Reason codes (docs/protocol.md) to exit codes: see exit_codes.h. */
#include "cli/exit_codes.h"

#include <string.h>

int cli_exit_for_reason(const char *reason)
{
    static const struct {
        const char *reason;
        int code;
    } map[] = {
        {"unknown_vm", CLI_UNKNOWN_VM},
        {"not_permitted", CLI_NOT_PERMITTED},
        {"recording_required", CLI_NOT_PERMITTED},
        {"port_not_allowed", CLI_PORT_NOT_ALLOWED},
        {"jit_required", CLI_JIT_REQUIRED},
        {"cap_reached", CLI_CAP_REACHED},
        {"unreachable", CLI_VM_UNREACHABLE},
        {"reset", CLI_VM_UNREACHABLE},
    };
    for (size_t i = 0; reason && i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(reason, map[i].reason) == 0)
            return map[i].code;
    return CLI_FAILED;
}
