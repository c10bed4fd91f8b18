/* The latency feature's programs: the same hooks as counting (hooks.h), named lat__<fn>, plus
 * the skb's end (kfree_skb, consume_skb, a reader's copy). */

#include "latency.h"
#include "hooks.h"

/* hooks.h hands every handler the program's context too; latency needs only the skb */
#define NP_LAT_ON_SKB(ctx, skb, dev, l3_at, stage) np_lat_skb(skb, l3_at, stage)
#define NP_LAT_ON_SKB_DEV(ctx, skb, dev, l3_at, stage) np_lat_skb_dev(skb, dev, l3_at, stage)
#define NP_LAT_ON_TYPED(ctx, skb, dev, l3_at, stage) np_lat_typed(skb, dev, l3_at, stage)
#define NP_LAT_END(ctx, skb, stage) np_lat_end(skb, stage)

NP_TX_HOOKS(lat__, NP_LAT_ON_SKB, NP_LAT_ON_SKB_DEV, NP_LAT_ON_TYPED)
NP_RX_HOOKS(lat__, NP_LAT_ON_SKB, NP_LAT_ON_SKB_DEV, NP_LAT_ON_TYPED)
NP_NF_HOOKS(lat__, NP_LAT_ON_TYPED)
NP_END_HOOKS(lat__, NP_LAT_END)
