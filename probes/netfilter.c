/* Counting at the IP layer's netfilter hooks (the programs: hooks.h). A netfilter hook is per
 * network namespace, so user space attaches one link per namespace. */

#include "count.h"
#include "hooks.h"

NP_NF_HOOKS(, np_count_typed)
