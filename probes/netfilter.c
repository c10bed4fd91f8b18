/* Counting at the IP layer's netfilter hooks (ip_output, ip_rcv, l4_rcv where kprobes are
 * compiled out); the hooks' context is read in hooks.h. */

#include "count.h"
#include "hooks.h"

NP_NF_HOOKS(, NP_COUNT_ON_TYPED)
