/* The latency feature's programs: the same hooks as counting (hooks.h), named lat__<fn>, plus
 * the skb's end (kfree_skb, consume_skb). */

#include "latency.h"
#include "hooks.h"

NP_TX_HOOKS(lat__, np_lat_skb, np_lat_skb_dev, np_lat_typed)
NP_RX_HOOKS(lat__, np_lat_skb, np_lat_typed)
NP_NF_HOOKS(lat__, np_lat_typed)
NP_END_HOOKS(lat__, np_lat_end)
