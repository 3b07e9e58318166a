/* The partition table's one definition (partitions.h): the address TSan's
 * grace-period annotations hang on. The accessors are consumer.c's, which
 * owns struct k2mc_part. */
#include "core/partitions.h"

char k2mc_table_grace;
