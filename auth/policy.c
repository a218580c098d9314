/* Permissions: deny by default; a user may do an action to a VM when one
 * of their roles grants the action on a selector matching the VM (its name
 * by glob, or one of its tags). */
#include "auth/auth.h"

#include "common/err.h"

#include <fnmatch.h>
#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    unsigned flag;
} action_names[] = {
    {"ssh-login", AUTH_ACT_SSH_LOGIN}, {"ssh-admin-login", AUTH_ACT_SSH_ADMIN_LOGIN},
    {"rdp-login", AUTH_ACT_RDP_LOGIN}, {"rdp-admin-login", AUTH_ACT_RDP_ADMIN_LOGIN},
    {"tunnel", AUTH_ACT_TUNNEL},       {"auditor", AUTH_ACT_AUDITOR},
    {"approver", AUTH_ACT_APPROVER},   {"admin", AUTH_ACT_ADMIN},
};

#define NACTIONS (sizeof(action_names) / sizeof(action_names[0]))

unsigned auth_action_parse(const char *name)
{
    for (size_t i = 0; i < NACTIONS; i++)
        if (strcmp(name, action_names[i].name) == 0)
            return action_names[i].flag;
    return 0;
}

const char *auth_action_name(unsigned flag)
{
    for (size_t i = 0; i < NACTIONS; i++)
        if (action_names[i].flag == flag)
            return action_names[i].name;
    return "unknown";
}

bool auth_selector_matches(const char *selector, const auth_target *vm)
{
    if (strncmp(selector, "tag:", 4) == 0) {
        for (size_t i = 0; i < vm->ntags; i++)
            if (strcmp(vm->tags[i], selector + 4) == 0)
                return true;
        return false;
    }
    return fnmatch(selector, vm->name, 0) == 0;
}

const auth_role *auth_role_find(const auth_role *roles, size_t nroles, const char *name)
{
    for (size_t i = 0; i < nroles; i++)
        if (strcmp(roles[i].name, name) == 0)
            return &roles[i];
    return NULL;
}

int auth_may(const auth_role *roles, size_t nroles, const auth_user *user, unsigned action,
             const auth_target *vm, char *why, size_t whylen)
{
    if (!user || user->disabled) {
        snprintf(why, whylen, "account disabled");
        return PST_E_DENIED;
    }
    bool has_action = false;
    for (size_t r = 0; r < user->nroles; r++) {
        const auth_role *role = auth_role_find(roles, nroles, user->roles[r]);
        if (!role || !(role->actions & action))
            continue;
        has_action = true;
        if (!vm) /* a non-VM action (auditor, approver, admin) */
            return 0;
        for (size_t s = 0; s < role->nselectors; s++)
            if (auth_selector_matches(role->selectors[s], vm))
                return 0;
    }
    if (has_action)
        snprintf(why, whylen, "no role of %s grants %s on %s", user->name,
                 auth_action_name(action), vm ? vm->name : "-");
    else
        snprintf(why, whylen, "no role of %s grants %s", user->name, auth_action_name(action));
    return PST_E_DENIED;
}

unsigned auth_actions_on(const auth_role *roles, size_t nroles, const auth_user *user,
                         const auth_target *vm)
{
    unsigned granted = 0;
    if (!user || user->disabled)
        return 0;
    for (size_t r = 0; r < user->nroles; r++) {
        const auth_role *role = auth_role_find(roles, nroles, user->roles[r]);
        if (!role)
            continue;
        for (size_t s = 0; s < role->nselectors; s++)
            if (auth_selector_matches(role->selectors[s], vm))
                granted |= role->actions;
    }
    return granted;
}

bool auth_mfa_required(const auth_role *roles, size_t nroles, const auth_user *user)
{
    for (size_t r = 0; r < user->nroles; r++) {
        const auth_role *role = auth_role_find(roles, nroles, user->roles[r]);
        if (role && role->mfa_required)
            return true;
    }
    return false;
}
