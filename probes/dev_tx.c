/* Counting at the transmit stages below L4: ip_output (L3), dev_queue_xmit (L2) and the
 * driver's own xmit function (the programs: hooks.h). */

#include "count.h"
#include "hooks.h"

NP_TX_HOOKS(, np_count_skb, np_count_skb_dev, np_count_typed)
