/* The latency feature's own programs: the ends of an skb's life (kfree_skb, consume_skb, a
 * reader's copy), named lat__<fn>. At the path stages counting's programs time the skb
 * (device_stages.h, with NP_TIMED). */

#include "latency.h"
#include "hooks.h"

#define NP_LAT_END(ctx, skb, stage) np_lat_end(skb, stage)

NP_END_HOOKS(lat__, NP_LAT_END)
