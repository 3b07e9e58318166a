/* The librdkafka versions whose behaviour k2mc depends on, in
 * rd_kafka_version() form (0xMMmmrr00: any build of that release or later
 * compares >=). Checked at run time against the library actually linked
 * (make RDKAFKA=system links Debian's, which may be older than the pin in
 * contrib/librdkafka.pin). */
#ifndef K2MC_RDKVERSION_H
#define K2MC_RDKVERSION_H

/* fetch.queue.backoff.ms: a partition queue over its prefetch threshold is
 * fetched again after that backoff, not when the broker thread next wakes
 * (the stall consumer.c's wake_fetch works around before it) */
#define K2MC_RDKAFKA_FETCH_BACKOFF 0x02020000
/* the cooperative-sticky assignor no longer aborts on a signal during a
 * rebalance (librdkafka issue 4312) */
#define K2MC_RDKAFKA_COOP_FIX 0x02030000
/* SASL/SCRAM's client-final message carries the nonce once (librdkafka pull
 * request 4895): before it, Kafka 4 refuses every SCRAM login */
#define K2MC_RDKAFKA_SCRAM_FIX 0x02060100
/* group.protocol=consumer (KIP-848) is generally available */
#define K2MC_RDKAFKA_KIP848 0x020c0000

#endif
