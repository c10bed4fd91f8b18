/* Counting at the receive stages: the driver handing the skb to the stack, L2, L3 and L4
 * delivery (the programs: hooks.h). */

#include "count.h"
#include "hooks.h"

NP_RX_HOOKS(, np_count_skb, np_count_typed)
