/* Counting at receive: the driver handing the skb to the stack, L2, L3 and L4 delivery. The
 * hooks' arguments are read in hooks.h. */

#include "count.h"
#include "hooks.h"

NP_RX_HOOKS(, NP_COUNT_ON_SKB, NP_COUNT_ON_SKB_DEV, NP_COUNT_ON_TYPED)
