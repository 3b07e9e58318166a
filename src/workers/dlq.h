/* Dead letter producer for --on-invalid dlq (and the hash policy's fallback):
 * a librdkafka producer owned by the writer pool that re-publishes a record
 * Memcached cannot take to --dlq-topic, and acknowledges the record's offset
 * to its partition's watermark only when the cluster has acknowledged the
 * copy. Not a policy (writer.c decides what goes here) and not a retry queue:
 * a copy that cannot be delivered stops k2mc (see k2mc_dlq_fatal). */
#ifndef K2MC_DLQ_H
#define K2MC_DLQ_H

#include <librdkafka/rdkafka.h>
#include <stdatomic.h>
#include <stdint.h>

#include "core/config.h"
#include "workers/consumer.h"
#include "workers/mapping.h"

/* Headers added to every dead letter, after the record's own headers, in
 * the spirit of Kafka Connect's __connect.errors.*: values are text. */
#define K2MC_DLQ_H_REASON "k2mc.error.reason"       /* k2mc_map_reason_name: missing_key, ... */
#define K2MC_DLQ_H_TOPIC "k2mc.error.topic"         /* source topic */
#define K2MC_DLQ_H_PARTITION "k2mc.error.partition" /* source partition, decimal */
#define K2MC_DLQ_H_OFFSET "k2mc.error.offset"       /* source offset, decimal */
#define K2MC_DLQ_H_MESSAGE "k2mc.error.message"     /* what was wrong, for people */

struct k2mc_dlq;

/* 1 when the run has a dead letter producer: --dlq-topic with --on-invalid
 * dlq or hash. */
int k2mc_dlq_wanted(const struct k2mc_config *cfg);
/* Its librdkafka configuration (cfg->brokers, client.id k2mc-dlq, then every
 * -X property), without callbacks. NULL with the reason in err. */
rd_kafka_conf_t *k2mc_dlq_conf(const struct k2mc_config *cfg, char *err, size_t errlen);
/* Builds the producer (k2mc_dlq_conf). table: the partition table acknowledgements are checked
 * against. NULL with a one-line reason in err. */
struct k2mc_dlq *k2mc_dlq_new(const struct k2mc_config *cfg, k2mc_table_ref *table, char *err,
			      size_t errlen);
/* Starts the thread (k2mc-dlq) that serves delivery reports. 0 or -errno. */
int k2mc_dlq_start(struct k2mc_dlq *d);

/* Writer threads, with the table's read lock held (p is in it): hands a
 * copy of m (key, value, headers, timestamp) plus the k2mc.error.* headers
 * to librdkafka. The record with tag `tag` in p is acknowledged when the
 * copy is delivered; never if it is not. Blocks while librdkafka's queue is
 * full. 0; -ECANCELED if *give_up became non-zero while blocked; or another
 * -errno, which is fatal (k2mc_dlq_fatal) and fails p at the record. */
int k2mc_dlq_send(struct k2mc_dlq *d, struct k2mc_part *p, uint64_t tag, rd_kafka_message_t *m,
		  enum k2mc_map_reason r, const char *detail, _Atomic int *give_up);

/* Any thread: a dead letter could not be delivered (the reason, naming its
 * source record), or NULL. The record's partition is failed at it
 * (k2mc_part_fail), so nothing at or past it is committed. */
const char *k2mc_dlq_fatal(struct k2mc_dlq *d);
const char *k2mc_dlq_topic(const struct k2mc_dlq *d);
/* Any thread (relaxed): copies delivered per reason, and handed over in
 * total (delivered + in flight + failed). */
uint64_t k2mc_dlq_delivered(struct k2mc_dlq *d, enum k2mc_map_reason r);
uint64_t k2mc_dlq_sent(struct k2mc_dlq *d);

/* Ends the thread: copies not delivered within flush_ms are purged, and
 * their records stay unacknowledged. Call after the writers stopped sending
 * and while the partition table still exists. */
void k2mc_dlq_stop(struct k2mc_dlq *d, int flush_ms);
void k2mc_dlq_free(struct k2mc_dlq *d);

#endif
