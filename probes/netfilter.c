/* Counting at the IP layer's netfilter hooks (ip_output, ip_rcv, l4_rcv where kprobes are
 * compiled out); the hooks' context is read in hooks.h. */

#include "device_stages.h"

NP_NF_HOOKS(, NP_HOOK_ON_TYPED)
