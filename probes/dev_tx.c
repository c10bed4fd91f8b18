/* Counting at transmit below L4: ip_output (L3), dev_queue_xmit (L2) and the driver's own xmit
 * function. The hooks' arguments are read in hooks.h. */

#include "device_stages.h"

NP_TX_HOOKS(, NP_HOOK_ON_SKB, NP_HOOK_ON_SKB_DEV, NP_HOOK_ON_TYPED)
