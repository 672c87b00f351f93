//! A grow-only set checker: clients add distinct elements, each add with an
//! outcome, and one read after every fault has healed returns the set's
//! contents.
//!
//! Every acknowledged add must be present, every present element must have
//! been attempted, and no add that failed definitely may be present. Unknown
//! adds may be present or absent; those present are counted. See
//! docs/linearizability.md, "Counter, set and shrinking".

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::counter::Outcome;

/// One add of an element to the set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetAdd {
    /// The client (process) that issued it; used only in reports.
    pub client: u64,
    /// When the client sent it (ns, the harness's single clock).
    pub invoke_ns: u64,
    /// When the client saw it end; `None` when it never did.
    pub complete_ns: Option<u64>,
    /// The element added; each element is added at most once in a history.
    pub element: Vec<u8>,
    /// How the add ended.
    pub outcome: Outcome<()>,
}

/// One way a set history is inconsistent with a correct grow-only set, or
/// (see [`SetViolation::is_harness_error`]) one way the history itself is
/// malformed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetViolation {
    /// An acknowledged add whose element is absent from the final read.
    Lost {
        element: Vec<u8>,
        /// Index of the add in the checked slice.
        index: usize,
        client: u64,
        invoke_ns: u64,
        complete_ns: Option<u64>,
    },
    /// An element present in the final read that no add attempted.
    Unexpected { element: Vec<u8> },
    /// An add reported as failed without effect, whose element is present.
    FailedButPresent {
        element: Vec<u8>,
        /// Index of the add in the checked slice.
        index: usize,
        client: u64,
        invoke_ns: u64,
        complete_ns: Option<u64>,
    },
    /// Harness error: the history adds one element `attempts` times. The
    /// element is still checked, judged by its most definite add: present
    /// is required if any add was acknowledged, and forbidden only if every
    /// add failed.
    DuplicateAttempt { element: Vec<u8>, attempts: usize },
}

impl SetViolation {
    /// Whether this reports a malformed history (a bug in the harness)
    /// rather than a misbehaving store.
    pub fn is_harness_error(&self) -> bool {
        matches!(self, SetViolation::DuplicateAttempt { .. })
    }
}

/// An element as an escaped byte string, `b"..."`.
struct Element<'a>(&'a [u8]);

impl fmt::Display for Element<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

/// An add as `#index client c [invoke..complete ns]`.
struct AddRef {
    index: usize,
    client: u64,
    invoke_ns: u64,
    complete_ns: Option<u64>,
}

impl fmt::Display for AddRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} client {} [{}..",
            self.index, self.client, self.invoke_ns
        )?;
        if let Some(complete_ns) = self.complete_ns {
            write!(f, "{complete_ns}")?;
        }
        f.write_str(" ns]")
    }
}

impl fmt::Display for SetViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetViolation::Lost {
                element,
                index,
                client,
                invoke_ns,
                complete_ns,
            } => write!(
                f,
                "lost: element {} added by {} was acknowledged but is absent from the final read",
                Element(element),
                AddRef {
                    index: *index,
                    client: *client,
                    invoke_ns: *invoke_ns,
                    complete_ns: *complete_ns
                }
            ),
            SetViolation::Unexpected { element } => write!(
                f,
                "unexpected: element {} is in the final read but was never added",
                Element(element)
            ),
            SetViolation::FailedButPresent {
                element,
                index,
                client,
                invoke_ns,
                complete_ns,
            } => write!(
                f,
                "failed but present: element {} added by {} was reported failed without effect \
                 but is in the final read",
                Element(element),
                AddRef {
                    index: *index,
                    client: *client,
                    invoke_ns: *invoke_ns,
                    complete_ns: *complete_ns
                }
            ),
            SetViolation::DuplicateAttempt { element, attempts } => write!(
                f,
                "harness error: element {} is added {attempts} times; elements must be distinct",
                Element(element)
            ),
        }
    }
}

/// What [`check_set`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetReport {
    /// Adds that were acknowledged.
    pub acknowledged: u64,
    /// Adds that failed without effect.
    pub failed: u64,
    /// Adds whose outcome is unknown.
    pub unknown: u64,
    /// Elements whose adds were all unknown (none acknowledged) and that are
    /// present: unknown adds that took effect. Not a violation.
    pub present_unknown: u64,
    /// Everything wrong: per element in byte order (a duplicate attempt
    /// before the element's verdict), then unexpected elements in byte
    /// order. Empty when the history is consistent.
    pub violations: Vec<SetViolation>,
}

impl SetReport {
    /// Whether no violation was found.
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }
}

/// The rank of an outcome when one element has several adds: the most
/// definite evidence of presence wins.
fn rank(outcome: &Outcome<()>) -> u8 {
    match outcome {
        Outcome::Ok(()) => 2,
        Outcome::Unknown => 1,
        Outcome::Failed => 0,
    }
}

/// Checks a history of adds against the set's final contents.
///
/// ```
/// use std::collections::BTreeSet;
/// use markab_core::check::{check_set, Outcome, SetAdd};
/// let adds = [
///     SetAdd { client: 1, invoke_ns: 0, complete_ns: Some(5), element: b"a".to_vec(), outcome: Outcome::Ok(()) },
///     SetAdd { client: 2, invoke_ns: 0, complete_ns: None, element: b"b".to_vec(), outcome: Outcome::Unknown },
/// ];
/// let read: BTreeSet<Vec<u8>> = [b"a".to_vec(), b"b".to_vec()].into();
/// let report = check_set(&adds, &read);
/// assert!(report.is_ok());
/// assert_eq!(report.present_unknown, 1);
/// ```
pub fn check_set(adds: &[SetAdd], final_read: &BTreeSet<Vec<u8>>) -> SetReport {
    let (mut acknowledged, mut failed, mut unknown) = (0u64, 0u64, 0u64);
    // Element -> (number of adds, index of its most definite add, the
    // earliest on ties).
    let mut by_element: BTreeMap<&[u8], (usize, usize)> = BTreeMap::new();
    for (index, add) in adds.iter().enumerate() {
        match add.outcome {
            Outcome::Ok(()) => acknowledged += 1,
            Outcome::Failed => failed += 1,
            Outcome::Unknown => unknown += 1,
        }
        let entry = by_element
            .entry(add.element.as_slice())
            .or_insert((0, index));
        entry.0 += 1;
        if rank(&add.outcome) > rank(&adds[entry.1].outcome) {
            entry.1 = index;
        }
    }

    let mut violations = Vec::new();
    let mut present_unknown = 0u64;
    for (&element, &(attempts, index)) in &by_element {
        if attempts > 1 {
            violations.push(SetViolation::DuplicateAttempt {
                element: element.to_vec(),
                attempts,
            });
        }
        let add = &adds[index];
        let present = final_read.contains(element);
        match (&add.outcome, present) {
            (Outcome::Ok(()), false) => violations.push(SetViolation::Lost {
                element: element.to_vec(),
                index,
                client: add.client,
                invoke_ns: add.invoke_ns,
                complete_ns: add.complete_ns,
            }),
            (Outcome::Failed, true) => violations.push(SetViolation::FailedButPresent {
                element: element.to_vec(),
                index,
                client: add.client,
                invoke_ns: add.invoke_ns,
                complete_ns: add.complete_ns,
            }),
            (Outcome::Unknown, true) => present_unknown += 1,
            (Outcome::Ok(()), true) | (Outcome::Failed | Outcome::Unknown, false) => {}
        }
    }
    for element in final_read {
        if !by_element.contains_key(element.as_slice()) {
            violations.push(SetViolation::Unexpected {
                element: element.clone(),
            });
        }
    }

    SetReport {
        acknowledged,
        failed,
        unknown,
        present_unknown,
        violations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(client: u64, invoke_ns: u64, element: &[u8], outcome: Outcome<()>) -> SetAdd {
        let complete_ns = match outcome {
            Outcome::Unknown => None,
            Outcome::Ok(()) | Outcome::Failed => Some(invoke_ns + 10),
        };
        SetAdd {
            client,
            invoke_ns,
            complete_ns,
            element: element.to_vec(),
            outcome,
        }
    }

    fn read(elements: &[&[u8]]) -> BTreeSet<Vec<u8>> {
        elements.iter().map(|element| element.to_vec()).collect()
    }

    fn history() -> Vec<SetAdd> {
        vec![
            add(1, 0, b"a", Outcome::Ok(())),
            add(2, 5, b"b", Outcome::Ok(())),
            add(3, 7, b"c", Outcome::Failed),
            add(1, 20, b"d", Outcome::Unknown),
            add(2, 25, b"e", Outcome::Unknown),
        ]
    }

    #[test]
    fn consistent_history_passes() {
        // All acknowledged adds present, the failed one absent and unknown ones either way: no violation, correct counts.
        let report = check_set(&history(), &read(&[b"a", b"b", b"e"]));
        assert_eq!(report.violations, vec![], "{report:#?}");
        assert_eq!(
            (report.acknowledged, report.failed, report.unknown),
            (2, 1, 2)
        );
        assert_eq!(report.present_unknown, 1);
    }

    #[test]
    fn lost_element_is_flagged() {
        // An acknowledged add missing from the final read is reported as lost, with its client and interval.
        let report = check_set(&history(), &read(&[b"a"]));
        assert_eq!(
            report.violations,
            vec![SetViolation::Lost {
                element: b"b".to_vec(),
                index: 1,
                client: 2,
                invoke_ns: 5,
                complete_ns: Some(15),
            }]
        );
        assert_eq!(
            report.violations[0].to_string(),
            "lost: element b\"b\" added by #1 client 2 [5..15 ns] was acknowledged but is absent \
             from the final read"
        );
    }

    #[test]
    fn unexpected_element_is_flagged() {
        // An element present but never attempted is reported, shown escaped.
        let report = check_set(&history(), &read(&[b"a", b"b", b"z\n\xff"]));
        assert_eq!(
            report.violations,
            vec![SetViolation::Unexpected {
                element: b"z\n\xff".to_vec()
            }]
        );
        assert!(
            report.violations[0].to_string().contains(r#"b"z\n\xff""#),
            "{}",
            report.violations[0]
        );
    }

    #[test]
    fn failed_but_present_is_flagged() {
        // An add reported as a definite failure whose element shows up is a violation.
        let report = check_set(&history(), &read(&[b"a", b"b", b"c"]));
        assert_eq!(
            report.violations,
            vec![SetViolation::FailedButPresent {
                element: b"c".to_vec(),
                index: 2,
                client: 3,
                invoke_ns: 7,
                complete_ns: Some(17),
            }]
        );
    }

    #[test]
    fn present_unknown_adds_are_counted_and_allowed() {
        // Unknown adds may have taken effect: present ones are counted, absent ones ignored, neither is a violation.
        let cases: [(Vec<&[u8]>, u64); 3] = [(vec![], 0), (vec![b"d"], 1), (vec![b"d", b"e"], 2)];
        for (present, expected) in cases {
            let mut elements: Vec<&[u8]> = vec![b"a", b"b"];
            elements.extend(present);
            let report = check_set(&history(), &read(&elements));
            assert!(report.is_ok(), "{report:#?}");
            assert_eq!(report.present_unknown, expected);
        }
    }

    #[test]
    fn duplicate_attempt_is_a_harness_error() {
        // An element added twice is reported once as a harness error and judged by its most definite add.
        let mut adds = history();
        adds.push(add(3, 30, b"c", Outcome::Ok(())));
        let report = check_set(&adds, &read(&[b"a", b"b"]));
        assert_eq!(
            report.violations,
            vec![
                SetViolation::DuplicateAttempt {
                    element: b"c".to_vec(),
                    attempts: 2
                },
                SetViolation::Lost {
                    element: b"c".to_vec(),
                    index: 5,
                    client: 3,
                    invoke_ns: 30,
                    complete_ns: Some(40),
                },
            ]
        );
        assert!(report.violations[0].is_harness_error());
        assert!(!report.violations[1].is_harness_error());
        // Present now: the acknowledged add explains it, the failed one is not held against it.
        let report = check_set(&adds, &read(&[b"a", b"b", b"c"]));
        assert_eq!(report.violations.len(), 1, "{report:#?}");
    }
}
