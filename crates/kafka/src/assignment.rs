//! Reading whole topics by assignment rather than as a group member: every partition of the
//! topics, each started where the reader's own store says, and how far the store is behind
//! the partitions' ends. A reader that keeps a full copy (every replica of a region's store)
//! reads this way, so that adding a replica never splits the partitions among replicas.

use std::time::Duration;

use rdkafka::consumer::{Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};

use crate::consumption::PositionSource;
use crate::{Error, Result};

/// Every partition of `topics`, from the brokers' metadata; an error names a topic that does
/// not exist or cannot be described.
pub fn partitions<X: ConsumerContext, C: Consumer<X>>(
    consumer: &C,
    topics: &[&str],
    timeout: Duration,
) -> Result<Vec<(String, i32)>> {
    let mut all = Vec::new();
    for topic in topics {
        let md = consumer.fetch_metadata(Some(topic), timeout)?;
        let found: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.name() == *topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if found.is_empty() {
            return Err(Error::Topic {
                topic: (*topic).to_owned(),
                message: "does not exist or is not readable by this principal; run \
                          `lienthong topics apply` and `lienthong acls apply`"
                    .into(),
            });
        }
        all.extend(found.into_iter().map(|p| ((*topic).to_owned(), p)));
    }
    Ok(all)
}

/// The partitions of `parts` listed with their stored positions (the beginning where the
/// store has none), ready to assign.
pub fn starting_at_stored(
    parts: &[(String, i32)],
    positions: &impl PositionSource,
) -> Result<TopicPartitionList> {
    listed_at(parts, at_stored(positions))
}

/// Where a reader starts each partition: at its stored position, or at the beginning where
/// the store has none.
pub fn at_stored(positions: &impl PositionSource) -> impl Fn(&str, i32) -> Offset + '_ {
    |topic, partition| {
        positions
            .next_offset(topic, partition)
            .map_or(Offset::Beginning, Offset::Offset)
    }
}

/// The partitions of `parts` listed, each at the offset `start` gives it.
fn listed_at(
    parts: &[(String, i32)],
    start: impl Fn(&str, i32) -> Offset,
) -> Result<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition) in parts {
        tpl.add_partition_offset(topic, *partition, start(topic, *partition))?;
    }
    Ok(tpl)
}

/// Assigns to `reader`, each at the offset `start` gives it, the partitions of `topics` that
/// `known` does not hold (added to the topics since the reader started), and returns them.
/// `lister` answers the metadata request: a reader's own connections may be held by a fetch
/// long-poll. Partitions only ever grow in Kafka, so none is ever unassigned here.
pub fn assign_added<X, C, Y, L>(
    reader: &C,
    lister: &L,
    topics: &[&str],
    known: &[(String, i32)],
    start: impl Fn(&str, i32) -> Offset,
    timeout: Duration,
) -> Result<Vec<(String, i32)>>
where
    X: ConsumerContext,
    C: Consumer<X>,
    Y: ConsumerContext,
    L: Consumer<Y>,
{
    let added: Vec<(String, i32)> = partitions(lister, topics, timeout)?
        .into_iter()
        .filter(|p| !known.contains(p))
        .collect();
    if !added.is_empty() {
        reader.incremental_assign(&listed_at(&added, start)?)?;
    }
    Ok(added)
}

/// Tells Kafka the stored positions of `parts` (advisory, for lag monitoring): a process
/// killed between its write and its advisory commit would otherwise show lag forever on a
/// partition that gets no new message (nothing consumed, so nothing commits it again).
pub fn commit_stored<X: ConsumerContext, C: Consumer<X>>(
    consumer: &C,
    parts: &[(String, i32)],
    positions: &impl PositionSource,
) {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition) in parts {
        if let Some(next) = positions.next_offset(topic, *partition)
            && tpl
                .add_partition_offset(topic, *partition, Offset::Offset(next))
                .is_err()
        {
            return;
        }
    }
    if tpl.count() > 0
        && let Err(e) = consumer.commit(&tpl, rdkafka::consumer::CommitMode::Async)
    {
        tracing::debug!(error = %e, "advisory commit of the stored positions failed");
    }
}

/// How many messages of `parts` the store has not yet: per partition, the high watermark
/// less the stored position (or the low watermark where nothing is stored).
pub fn lag<X: ConsumerContext, C: Consumer<X>>(
    consumer: &C,
    parts: &[(String, i32)],
    positions: &impl PositionSource,
    timeout: Duration,
) -> Result<i64> {
    let mut behind = 0;
    for (topic, partition) in parts {
        let (low, high) = consumer.fetch_watermarks(topic, *partition, timeout)?;
        let at = positions.next_offset(topic, *partition).unwrap_or(low);
        behind += (high - at.max(low)).max(0);
    }
    Ok(behind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumption::StoredPositions;

    #[test]
    fn partitions_start_where_the_store_stands_or_at_the_beginning() {
        let positions = StoredPositions::default();
        positions.record("a", 1, 42);
        let parts = [("a".to_owned(), 0), ("a".to_owned(), 1)];
        let tpl = starting_at_stored(&parts, &positions).expect("list");
        let offsets: Vec<Offset> = tpl.elements().iter().map(|e| e.offset()).collect();
        assert_eq!(offsets, [Offset::Beginning, Offset::Offset(42)]);
    }
}
