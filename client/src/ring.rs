//! Which server owns a chain: consistent hashing with virtual nodes, so
//! adding or removing a server moves only about 1/n of the chains. Clients
//! and servers compute the same ring from the same member list.

/// Points each member places on the ring.
pub const DEFAULT_VIRTUAL_NODES: usize = 128;

#[derive(Debug, Clone)]
pub struct HashRing {
    members: Vec<String>,
    /// (position, member index), sorted by position.
    points: Vec<(u64, usize)>,
}

fn position(text: &str) -> u64 {
    let hash = blake3::derive_key("ate 2026 hash ring", text.as_bytes());
    u64::from_le_bytes(hash[..8].try_into().expect("8 bytes"))
}

impl HashRing {
    /// A ring over `members` (addresses such as `10.0.0.1:5000`). Order and
    /// duplicates do not matter.
    pub fn new(members: impl IntoIterator<Item = String>, virtual_nodes: usize) -> Self {
        let mut members: Vec<String> = members.into_iter().collect();
        members.sort();
        members.dedup();
        let mut points: Vec<(u64, usize)> = members
            .iter()
            .enumerate()
            .flat_map(|(index, member)| {
                (0..virtual_nodes.max(1)).map(move |v| (position(&format!("{member}#{v}")), index))
            })
            .collect();
        points.sort_unstable();
        Self { members, points }
    }

    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// The member that owns `chain`; `None` for an empty ring.
    pub fn owner(&self, chain: &str) -> Option<&str> {
        let at = position(chain);
        let index = self.points.partition_point(|(point, _)| *point < at);
        let (_, member) = self.points.get(index).or_else(|| self.points.first())?;
        Some(&self.members[*member])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(count: usize) -> HashRing {
        HashRing::new((0..count).map(|i| format!("10.0.0.{i}:5000")), DEFAULT_VIRTUAL_NODES)
    }

    #[test]
    fn ownership_is_deterministic_and_balanced() {
        let ring = ring(4);
        let again = HashRing::new(ring.members().iter().rev().cloned(), DEFAULT_VIRTUAL_NODES);
        let mut counts = std::collections::HashMap::new();
        for chain in 0..8000 {
            let name = format!("chain-{chain}");
            assert_eq!(ring.owner(&name), again.owner(&name), "member order must not matter");
            *counts.entry(ring.owner(&name).unwrap().to_string()).or_insert(0) += 1;
        }
        for (member, count) in counts {
            assert!((1400..=2600).contains(&count), "{member} owns {count} of 8000");
        }
    }

    #[test]
    fn adding_a_member_moves_about_a_fifth_of_the_chains() {
        let (before, after) = (ring(4), ring(5));
        let moved = (0..10_000).filter(|i| {
            let name = format!("chain-{i}");
            before.owner(&name) != after.owner(&name)
        });
        let moved = moved.count();
        assert!((1200..=3000).contains(&moved), "{moved} of 10000 moved");
        assert_eq!(HashRing::new(Vec::<String>::new(), 8).owner("x"), None);
    }
}
