/* Counting at receive: the driver handing the skb to the stack, L2, L3 and L4 delivery. The
 * hooks' arguments are read in hooks.h. */

#include "device_stages.h"

NP_RX_HOOKS(, NP_HOOK_ON_SKB, NP_HOOK_ON_SKB_DEV, NP_HOOK_ON_TYPED)
