/* The just-in-time gate on every session's admission (session.h).
 *
 * A VM with "jit": {"required": true} is closed to everyone for the ports
 * its policy covers (jit.ports, or all its management ports) until a JIT
 * grant opens it. Grants are not issued yet (issue 12 brings requests,
 * approvals and their store): until then the gate stays shut, so that the
 * setting never silently does nothing. */
#include "gateway/session.h"

#include "common/err.h"

#include <stdio.h>

static bool covers(const gw_vm *vm, int port)
{
    if (vm->jit.nports == 0)
        return true; /* every management port */
    for (size_t i = 0; i < vm->jit.nports; i++)
        if (vm->jit.ports[i] == port)
            return true;
    return false;
}

int gw_jit_admit(gw_server *srv, const gw_vm *vm, const gw_identity *id, int port,
                 const char *source, char *why, size_t whylen)
{
    (void)srv;
    (void)id;
    (void)source;
    if (!vm->jit.required || !covers(vm, port))
        return 0;
    snprintf(why, whylen, "%s requires just-in-time access for port %d, and you hold no live "
                          "grant for it: request access first", vm->name, port);
    return PST_E_DENIED;
}
