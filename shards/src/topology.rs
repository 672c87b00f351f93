//! The machine as the shard runtime sees it (cores, hardware threads, NUMA nodes) and the shard
//! plan: which cpu each shard is pinned to.
//!
//! Detection uses hwloc (through `hwlocality`) and keeps only the cpus this process may run on:
//! hwloc's allowed cpuset intersected with `sched_getaffinity`, so `taskset` and cgroup limits are
//! honoured.

use std::collections::BTreeSet;
use std::fmt;

use hwlocality::object::types::ObjectType;

use crate::error::ShardsError;

/// Bytes in one GiB, for display.
const GIB: f64 = (1u64 << 30) as f64;

/// One physical core this process may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Core {
    /// Dense core number, 0-based, in hwloc's logical order (unique across packages).
    pub core: usize,
    /// OS index of the NUMA node the core belongs to.
    pub numa_node: usize,
    /// OS cpu ids (hardware threads, hwloc "PUs") of this core that this process may use,
    /// ascending. Never empty.
    pub cpus: Vec<usize>,
}

/// One NUMA node that holds at least one usable cpu.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NumaNode {
    /// OS index of the node.
    pub node: usize,
    /// Memory local to the node in bytes as hwloc reports it (0 when unknown). On virtual
    /// machines this can differ a lot from `/proc/meminfo`; do not size caches from it.
    pub memory_bytes: u64,
    /// Usable OS cpu ids on this node, ascending.
    pub cpus: Vec<usize>,
}

/// The usable part of the machine: cores and NUMA nodes restricted to this process's cpus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// Usable cores, ordered by `core`.
    pub cores: Vec<Core>,
    /// NUMA nodes holding usable cpus, ordered by `node`.
    pub numa_nodes: Vec<NumaNode>,
}

/// How many shards to run, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardCount {
    /// One shard per usable core (first hardware thread of each).
    Auto,
    /// This many shards, spread over cores first, then over second hardware threads.
    Count(usize),
    /// One shard per listed OS cpu id, in the order given.
    Cpus(Vec<usize>),
}

/// Where one shard runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardSlot {
    /// Shard number, 0-based and dense.
    pub shard: usize,
    /// OS cpu id the shard's executor is pinned to.
    pub cpu: usize,
    /// Dense core number (see [`Core::core`]) of that cpu.
    pub core: usize,
    /// OS index of the NUMA node of that cpu.
    pub numa_node: usize,
}

/// The placement of every shard of a node. `slots[i].shard == i`, and no cpu appears twice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardPlan {
    /// One slot per shard, ordered by shard number.
    pub slots: Vec<ShardSlot>,
}

impl ShardPlan {
    /// The cpus of the plan, in shard order.
    pub fn cpus(&self) -> Vec<usize> {
        self.slots.iter().map(|slot| slot.cpu).collect()
    }
}

impl Topology {
    /// Detects the machine with hwloc and keeps the cpus this process may run on.
    ///
    /// Errors when hwloc fails, when the affinity mask cannot be read, or when no usable cpu is
    /// left.
    pub fn detect() -> Result<Topology, ShardsError> {
        let affinity = affinity_cpus()?;
        let hwloc = hwlocality::Topology::new().map_err(|error| ShardsError::TopologyDetect {
            reason: error.to_string(),
        })?;
        let allowed: BTreeSet<usize> = hwloc
            .allowed_cpuset()
            .iter_set()
            .map(usize::from)
            .filter(|cpu| affinity.contains(cpu))
            .collect();

        let mut numa_nodes = Vec::new();
        for node in hwloc.objects_with_type(ObjectType::NUMANode) {
            let Some(os_index) = node.os_index() else {
                continue;
            };
            let cpus: Vec<usize> = node
                .cpuset()
                .map(|set| {
                    set.iter_set()
                        .map(usize::from)
                        .filter(|cpu| allowed.contains(cpu))
                        .collect()
                })
                .unwrap_or_default();
            numa_nodes.push(NumaNode {
                node: os_index,
                memory_bytes: node.total_memory(),
                cpus,
            });
        }

        let mut cores = Vec::new();
        for core in hwloc.objects_with_type(ObjectType::Core) {
            let cpus: Vec<usize> = core
                .cpuset()
                .map(|set| {
                    set.iter_set()
                        .map(usize::from)
                        .filter(|cpu| allowed.contains(cpu))
                        .collect()
                })
                .unwrap_or_default();
            let Some(&first_cpu) = cpus.first() else {
                continue;
            };
            let numa_node = numa_nodes
                .iter()
                .find(|node| node.cpus.contains(&first_cpu))
                .map_or(0, |node| node.node);
            cores.push(Core {
                core: cores.len(),
                numa_node,
                cpus,
            });
        }

        // Machines where hwloc reports no NUMA node (or no cpuset for it) still get one node
        // holding every usable cpu, so that every core has a node.
        if numa_nodes.iter().all(|node| node.cpus.is_empty()) {
            let memory_bytes = hwloc.root_object().total_memory();
            numa_nodes = vec![NumaNode {
                node: 0,
                memory_bytes,
                cpus: allowed.iter().copied().collect(),
            }];
            for core in &mut cores {
                core.numa_node = 0;
            }
        }
        numa_nodes.retain(|node| !node.cpus.is_empty());
        Topology::from_parts(cores, numa_nodes)
    }

    /// Builds a topology from explicit parts (tests, or machines described by configuration),
    /// checking that it is coherent: at least one core, every core with at least one cpu, no cpu
    /// twice, dense core numbers, every core on a listed NUMA node whose cpus include the core's.
    pub fn from_parts(
        cores: Vec<Core>,
        numa_nodes: Vec<NumaNode>,
    ) -> Result<Topology, ShardsError> {
        let invalid = |reason: String| Err(ShardsError::InvalidTopology { reason });
        if cores.is_empty() {
            return invalid("no usable core".to_string());
        }
        let mut seen = BTreeSet::new();
        for (index, core) in cores.iter().enumerate() {
            if core.core != index {
                return invalid(format!("core number {} at position {index}", core.core));
            }
            if core.cpus.is_empty() {
                return invalid(format!("core {} has no cpu", core.core));
            }
            for &cpu in &core.cpus {
                if !seen.insert(cpu) {
                    return invalid(format!("cpu {cpu} appears in two cores"));
                }
            }
            let Some(node) = numa_nodes.iter().find(|node| node.node == core.numa_node) else {
                return invalid(format!(
                    "core {} is on NUMA node {}, which is not listed",
                    core.core, core.numa_node
                ));
            };
            if let Some(cpu) = core.cpus.iter().find(|cpu| !node.cpus.contains(cpu)) {
                return invalid(format!(
                    "cpu {cpu} of core {} is not among NUMA node {}'s cpus",
                    core.core, node.node
                ));
            }
        }
        Ok(Topology { cores, numa_nodes })
    }

    /// Every usable OS cpu id, ascending.
    pub fn cpus(&self) -> Vec<usize> {
        let mut cpus: Vec<usize> = self
            .cores
            .iter()
            .flat_map(|core| core.cpus.iter().copied())
            .collect();
        cpus.sort_unstable();
        cpus
    }

    /// The core holding `cpu`, if it is usable.
    fn core_of(&self, cpu: usize) -> Option<&Core> {
        self.cores.iter().find(|core| core.cpus.contains(&cpu))
    }

    /// Every usable cpu in placement order: the first hardware thread of every core, then the
    /// second of every core, and so on; within each round the NUMA nodes take turns, so that a
    /// plan using part of the machine spreads over every node's memory controller.
    fn placement_order(&self) -> Vec<&Core> {
        let rounds = self
            .cores
            .iter()
            .map(|core| core.cpus.len())
            .max()
            .unwrap_or(0);
        let mut order = Vec::new();
        for round in 0..rounds {
            let per_node: Vec<Vec<&Core>> = self
                .numa_nodes
                .iter()
                .map(|node| {
                    self.cores
                        .iter()
                        .filter(|core| core.numa_node == node.node && core.cpus.len() > round)
                        .collect()
                })
                .collect();
            let longest = per_node.iter().map(Vec::len).max().unwrap_or(0);
            for position in 0..longest {
                for node_cores in &per_node {
                    if let Some(core) = node_cores.get(position) {
                        order.push(*core);
                    }
                }
            }
        }
        order
    }

    /// Places shards on cpus.
    ///
    /// `Auto` and `Count(n)` pick cpus in placement order (one hardware thread per core first,
    /// NUMA nodes taking turns) and then number the shards by (NUMA node, core, cpu), so that
    /// neighbouring shards share a node. `Cpus` keeps the order given. Errors name what is
    /// available: zero shards, more shards than usable cpus, a cpu this process may not use, a
    /// cpu listed twice.
    pub fn plan(&self, shards: ShardCount) -> Result<ShardPlan, ShardsError> {
        let available = || format_cpu_list(&self.cpus());
        let slot = |shard: usize, cpu: usize, core: &Core| ShardSlot {
            shard,
            cpu,
            core: core.core,
            numa_node: core.numa_node,
        };
        let count = match shards {
            ShardCount::Auto => self.cores.len(),
            ShardCount::Count(count) => count,
            ShardCount::Cpus(cpus) => {
                if cpus.is_empty() {
                    return Err(ShardsError::ZeroShards);
                }
                let mut seen = BTreeSet::new();
                let mut slots = Vec::with_capacity(cpus.len());
                for (shard, cpu) in cpus.into_iter().enumerate() {
                    if !seen.insert(cpu) {
                        return Err(ShardsError::DuplicateCpu { cpu });
                    }
                    let core = self.core_of(cpu).ok_or_else(|| ShardsError::UnknownCpu {
                        cpu,
                        available: available(),
                    })?;
                    slots.push(slot(shard, cpu, core));
                }
                return Ok(ShardPlan { slots });
            }
        };
        if count == 0 {
            return Err(ShardsError::ZeroShards);
        }
        let order = self.placement_order();
        if count > order.len() {
            return Err(ShardsError::TooManyShards {
                requested: count,
                cores: self.cores.len(),
                cpus: order.len(),
                available: available(),
            });
        }
        // The round a core appears in picks which of its hardware threads is used.
        let mut used_per_core = vec![0usize; self.cores.len()];
        let mut chosen: Vec<(usize, usize, usize)> = Vec::with_capacity(count);
        for core in order.into_iter().take(count) {
            let cpu = core.cpus[used_per_core[core.core]];
            used_per_core[core.core] += 1;
            chosen.push((core.numa_node, core.core, cpu));
        }
        chosen.sort_unstable();
        let slots = chosen
            .into_iter()
            .enumerate()
            .map(|(shard, (_, core, cpu))| slot(shard, cpu, &self.cores[core]))
            .collect();
        Ok(ShardPlan { slots })
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cpus = self.cpus();
        writeln!(
            f,
            "usable by this process: cores {}, cpus {} ({}), NUMA nodes {}",
            self.cores.len(),
            cpus.len(),
            format_cpu_list(&cpus),
            self.numa_nodes.len()
        )?;
        writeln!(f, "{:>6}  {:>9}  cpus", "core", "numa_node")?;
        for core in &self.cores {
            writeln!(
                f,
                "{:>6}  {:>9}  {}",
                core.core,
                core.numa_node,
                format_cpu_list(&core.cpus)
            )?;
        }
        writeln!(f, "{:>9}  {:>12}  cpus", "numa_node", "memory_gib")?;
        for node in &self.numa_nodes {
            writeln!(
                f,
                "{:>9}  {:>12.1}  {}",
                node.node,
                node.memory_bytes as f64 / GIB,
                format_cpu_list(&node.cpus)
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for ShardPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "shard plan: {} shards", self.slots.len())?;
        writeln!(
            f,
            "{:>6}  {:>4}  {:>5}  {:>9}",
            "shard", "cpu", "core", "numa_node"
        )?;
        for slot in &self.slots {
            writeln!(
                f,
                "{:>6}  {:>4}  {:>5}  {:>9}",
                slot.shard, slot.cpu, slot.core, slot.numa_node
            )?;
        }
        Ok(())
    }
}

/// The text of `markab topology`: cores, NUMA nodes with memory, and the shard plan.
pub fn report(topology: &Topology, plan: &ShardPlan) -> String {
    format!("{topology}\n{plan}")
}

/// Formats cpu ids as a compact list: `0-3,8,10-11`.
pub fn format_cpu_list(cpus: &[usize]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut index = 0;
    while index < sorted.len() {
        let start = sorted[index];
        let mut end = start;
        while index + 1 < sorted.len() && sorted[index + 1] == end + 1 {
            index += 1;
            end = sorted[index];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        index += 1;
    }
    if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join(",")
    }
}

/// The cpus in this thread's affinity mask (`sched_getaffinity`), ascending.
fn affinity_cpus() -> Result<BTreeSet<usize>, ShardsError> {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(ShardsError::Affinity {
            source: std::io::Error::last_os_error(),
        });
    }
    let cpu_max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: every index is below the set's size in bits.
    Ok((0..cpu_max)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two NUMA nodes, two cores each, two hardware threads per core:
    /// node 0 = cores 0,1 (cpus 0,4 and 1,5), node 1 = cores 2,3 (cpus 2,6 and 3,7).
    fn two_socket_machine() -> Topology {
        let cores = vec![
            Core {
                core: 0,
                numa_node: 0,
                cpus: vec![0, 4],
            },
            Core {
                core: 1,
                numa_node: 0,
                cpus: vec![1, 5],
            },
            Core {
                core: 2,
                numa_node: 1,
                cpus: vec![2, 6],
            },
            Core {
                core: 3,
                numa_node: 1,
                cpus: vec![3, 7],
            },
        ];
        let numa_nodes = vec![
            NumaNode {
                node: 0,
                memory_bytes: 1 << 34,
                cpus: vec![0, 1, 4, 5],
            },
            NumaNode {
                node: 1,
                memory_bytes: 1 << 34,
                cpus: vec![2, 3, 6, 7],
            },
        ];
        Topology::from_parts(cores, numa_nodes).expect("valid topology")
    }

    // Proves detection on this machine finds at least one core and that Auto, Count(1) and
    // Count(n cores) plan while Count(64) fails naming the available cpus.
    #[test]
    fn detect_and_plan_on_this_machine() {
        let topology = Topology::detect().expect("detect");
        assert!(!topology.cores.is_empty());
        assert!(!topology.numa_nodes.is_empty());
        let cores = topology.cores.len();

        let auto = topology.plan(ShardCount::Auto).expect("auto");
        assert_eq!(auto.slots.len(), cores);
        let one = topology.plan(ShardCount::Count(1)).expect("one");
        assert_eq!(one.slots.len(), 1);
        let all = topology.plan(ShardCount::Count(cores)).expect("all cores");
        let used_cores: BTreeSet<usize> = all.slots.iter().map(|slot| slot.core).collect();
        assert_eq!(
            used_cores.len(),
            cores,
            "one shard per core before hyperthreads"
        );
        if cores >= 2 {
            assert_eq!(
                topology
                    .plan(ShardCount::Count(2))
                    .expect("two")
                    .slots
                    .len(),
                2
            );
        }

        let error = topology.plan(ShardCount::Count(64)).expect_err("64 shards");
        let message = error.to_string();
        assert!(message.contains("64 shards requested"), "{message}");
        assert!(
            message.contains(&format_cpu_list(&topology.cpus())),
            "{message}"
        );

        let text = report(&topology, &auto);
        assert!(
            text.contains("numa_node") && text.contains("shard"),
            "{text}"
        );
    }

    // Proves Count(n) uses one hardware thread of every core before any second thread, takes
    // NUMA nodes in turns, and numbers shards by node then core.
    #[test]
    fn count_spreads_over_cores_and_nodes_first() {
        let topology = two_socket_machine();
        let two = topology.plan(ShardCount::Count(2)).expect("two");
        assert_eq!(two.cpus(), vec![0, 2], "one shard per NUMA node");
        assert_eq!(two.slots[1].numa_node, 1);

        let four = topology.plan(ShardCount::Count(4)).expect("four");
        assert_eq!(four.cpus(), vec![0, 1, 2, 3], "first threads only");

        let six = topology.plan(ShardCount::Count(6)).expect("six");
        assert_eq!(six.cpus(), vec![0, 4, 1, 2, 6, 3]);
        for (index, slot) in six.slots.iter().enumerate() {
            assert_eq!(slot.shard, index);
        }

        let auto = topology.plan(ShardCount::Auto).expect("auto");
        assert_eq!(auto.cpus(), vec![0, 1, 2, 3]);
        assert_eq!(
            topology
                .plan(ShardCount::Count(8))
                .expect("all")
                .slots
                .len(),
            8
        );
    }

    // Proves an explicit cpu list keeps its order and reports core and node of each cpu.
    #[test]
    fn explicit_cpus_keep_their_order() {
        let topology = two_socket_machine();
        let plan = topology.plan(ShardCount::Cpus(vec![7, 0])).expect("plan");
        assert_eq!(
            plan.slots,
            vec![
                ShardSlot {
                    shard: 0,
                    cpu: 7,
                    core: 3,
                    numa_node: 1
                },
                ShardSlot {
                    shard: 1,
                    cpu: 0,
                    core: 0,
                    numa_node: 0
                },
            ]
        );
    }

    // Proves detection honours the affinity mask: a thread allowed on one cpu sees only that cpu.
    #[test]
    fn detect_respects_affinity() {
        let first_cpu = Topology::detect().expect("detect").cpus()[0];
        let seen = std::thread::spawn(move || {
            // SAFETY: an all-zero cpu_set_t is a valid empty set; CPU_SET stays in bounds.
            let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            unsafe { libc::CPU_SET(first_cpu, &mut set) };
            // SAFETY: `set` is a valid cpu_set_t of the size passed; 0 = this thread.
            let rc =
                unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
            assert_eq!(rc, 0, "sched_setaffinity");
            Topology::detect().expect("detect").cpus()
        })
        .join()
        .expect("thread");
        assert_eq!(seen, vec![first_cpu]);
    }

    // Proves every planning error is reported with what is available.
    #[test]
    fn plan_errors_name_what_is_available() {
        let topology = two_socket_machine();
        let too_many = topology.plan(ShardCount::Count(9)).expect_err("9");
        assert_eq!(
            too_many.to_string(),
            "9 shards requested but this process may only use 8 cpus on 4 cores \
             (available cpus: 0-7)"
        );
        let unknown = topology
            .plan(ShardCount::Cpus(vec![1, 12]))
            .expect_err("12");
        assert_eq!(
            unknown.to_string(),
            "cpu 12 is not available to this process (available cpus: 0-7)"
        );
        let twice = topology
            .plan(ShardCount::Cpus(vec![1, 1]))
            .expect_err("dup");
        assert!(matches!(twice, ShardsError::DuplicateCpu { cpu: 1 }));
        assert!(matches!(
            topology.plan(ShardCount::Count(0)),
            Err(ShardsError::ZeroShards)
        ));
        assert!(matches!(
            topology.plan(ShardCount::Cpus(Vec::new())),
            Err(ShardsError::ZeroShards)
        ));
    }

    // Proves from_parts rejects incoherent topologies.
    #[test]
    fn from_parts_rejects_incoherent_topologies() {
        let node = NumaNode {
            node: 0,
            memory_bytes: 0,
            cpus: vec![0, 1],
        };
        assert!(Topology::from_parts(Vec::new(), vec![node.clone()]).is_err());
        let shared_cpu = vec![
            Core {
                core: 0,
                numa_node: 0,
                cpus: vec![0],
            },
            Core {
                core: 1,
                numa_node: 0,
                cpus: vec![0],
            },
        ];
        assert!(Topology::from_parts(shared_cpu, vec![node.clone()]).is_err());
        let unknown_node = vec![Core {
            core: 0,
            numa_node: 3,
            cpus: vec![0],
        }];
        assert!(Topology::from_parts(unknown_node, vec![node.clone()]).is_err());
        let empty_core = vec![Core {
            core: 0,
            numa_node: 0,
            cpus: vec![],
        }];
        assert!(Topology::from_parts(empty_core, vec![node]).is_err());
    }

    // Proves cpu lists are compacted into ranges.
    #[test]
    fn cpu_lists_are_compact() {
        assert_eq!(format_cpu_list(&[3, 0, 1, 2, 8, 10, 11]), "0-3,8,10-11");
        assert_eq!(format_cpu_list(&[5]), "5");
        assert_eq!(format_cpu_list(&[]), "none");
    }
}
