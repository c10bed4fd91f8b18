/* Counting at transmit below L4: ip_output (L3), dev_queue_xmit (L2) and the driver's own xmit
 * function. The hooks' arguments are read in hooks.h. */

#include "count.h"
#include "hooks.h"

NP_TX_HOOKS(, NP_COUNT_ON_SKB, NP_COUNT_ON_SKB_DEV, NP_COUNT_ON_TYPED)
