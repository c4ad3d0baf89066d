//! [`LatencyMatrix`]: the one-way delay between every pair of regions, parsed from a flag.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

const SPEC_EXAMPLES: &str = "e.g. 80ms, or us-east:eu-west=80ms,us-east:ap-south=150ms,eu-west:ap-south=120ms";

/// One-way delays between regions. Symmetric: `a:b` and `b:a` are the same pair.
///
/// Two spellings (see [`LatencyMatrix::parse`]):
/// * one duration, `80ms`: every pair of *distinct* regions gets it, a region to itself 0;
/// * a list, `us-east:eu-west=80ms,us-east:ap-south=150ms,eu-west:ap-south=120ms`: each pair
///   named once; a region to itself is 0 unless listed (`us-east:us-east=2ms`).
///
/// A parsed matrix knows nothing about a cluster yet; [`LatencyMatrix::validate`] checks it
/// against the regions a cluster actually has (no unknown region, no missing pair).
///
/// ```
/// use std::time::Duration;
/// use geocache_node::netsim::LatencyMatrix;
///
/// let m: LatencyMatrix = "us-east:eu-west=80ms,us-east:ap-south=150ms,eu-west:ap-south=120ms".parse().unwrap();
/// m.validate(&["us-east", "eu-west", "ap-south"]).unwrap();
/// assert_eq!(m.delay("ap-south", "us-east"), Duration::from_millis(150));
/// assert_eq!(m.delay("eu-west", "eu-west"), Duration::ZERO);
/// assert!(m.validate(&["us-east", "us-west"]).is_err()); // us-west has no latency given
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatencyMatrix {
    /// `Some(d)`: every pair of distinct regions is `d` apart (`pairs` is empty).
    uniform: Option<Duration>,
    /// Listed pairs, keyed with the smaller region name first.
    pairs: BTreeMap<(String, String), Duration>,
}

/// Why a latency spec was rejected; the message names the offending part and shows the syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatrixError {
    #[error("bad latency spec {spec:?}: {reason} ({SPEC_EXAMPLES})")]
    Syntax { spec: String, reason: String },
    #[error("latency for {a}:{b} is given twice")]
    Duplicate { a: String, b: String },
    #[error("unknown region {region:?} in the latency spec; this cluster's regions are: {known}")]
    UnknownRegion { region: String, known: String },
    #[error("no latency given for {a}:{b}; list every pair of distinct regions, or give one duration for all")]
    MissingPair { a: String, b: String },
}

impl LatencyMatrix {
    /// Every pair of distinct regions `delay` apart, each region 0 from itself.
    pub fn uniform(delay: Duration) -> LatencyMatrix {
        LatencyMatrix { uniform: Some(delay), pairs: BTreeMap::new() }
    }

    /// Parses `80ms` or `A:B=80ms,A:C=150ms,...` (humantime durations: `80ms`, `1s`, `1s 500ms`).
    pub fn parse(spec: &str) -> Result<LatencyMatrix, MatrixError> {
        let syntax = |reason: String| MatrixError::Syntax { spec: spec.to_string(), reason };
        let trimmed = spec.trim();
        if trimmed.is_empty() {
            return Err(syntax("empty".into()));
        }
        if !trimmed.contains('=') {
            let delay = humantime::parse_duration(trimmed).map_err(|e| syntax(e.to_string()))?;
            return Ok(LatencyMatrix::uniform(delay));
        }
        let mut pairs = BTreeMap::new();
        for item in trimmed.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (pair, delay) =
                item.split_once('=').ok_or_else(|| syntax(format!("{item:?} is not REGION:REGION=DURATION")))?;
            let (a, b) = pair
                .split_once(':')
                .ok_or_else(|| syntax(format!("{pair:?} is not REGION:REGION (e.g. us-east:eu-west)")))?;
            let (a, b) = (a.trim(), b.trim());
            if a.is_empty() || b.is_empty() || b.contains(':') {
                return Err(syntax(format!("{pair:?} is not REGION:REGION (e.g. us-east:eu-west)")));
            }
            let delay = humantime::parse_duration(delay.trim()).map_err(|e| syntax(format!("{item:?}: {e}")))?;
            let key = ordered(a, b);
            if pairs.insert(key.clone(), delay).is_some() {
                return Err(MatrixError::Duplicate { a: key.0, b: key.1 });
            }
        }
        if pairs.is_empty() {
            return Err(syntax("no pairs".into()));
        }
        Ok(LatencyMatrix { uniform: None, pairs })
    }

    /// Checks the matrix against a cluster's `regions`: every region it names must be one of
    /// them, and every pair of distinct regions among them must have a delay.
    pub fn validate(&self, regions: &[&str]) -> Result<(), MatrixError> {
        for (a, b) in self.pairs.keys() {
            for region in [a, b] {
                if !regions.contains(&region.as_str()) {
                    return Err(MatrixError::UnknownRegion { region: region.clone(), known: regions.join(", ") });
                }
            }
        }
        if self.uniform.is_none() {
            for (i, a) in regions.iter().enumerate() {
                for b in &regions[i + 1..] {
                    if a != b && !self.pairs.contains_key(&ordered(a, b)) {
                        return Err(MatrixError::MissingPair { a: a.to_string(), b: b.to_string() });
                    }
                }
            }
        }
        Ok(())
    }

    /// The one-way delay between regions `a` and `b` (either order). A pair the matrix does not
    /// name is 0: a region to itself always, distinct regions only if [`Self::validate`] was
    /// skipped.
    pub fn delay(&self, a: &str, b: &str) -> Duration {
        if let Some(&d) = self.pairs.get(&ordered(a, b)) {
            return d;
        }
        match self.uniform {
            Some(d) if a != b => d,
            _ => Duration::ZERO,
        }
    }

    /// The largest one-way delay between any two of `regions` (a region to itself included).
    pub fn max_delay(&self, regions: &[&str]) -> Duration {
        regions.iter().flat_map(|a| regions.iter().map(move |b| self.delay(a, b))).max().unwrap_or_default()
    }

    /// A table of one-way delays between `regions`, one line per region, for printing.
    pub fn table(&self, regions: &[&str]) -> String {
        let width = regions.iter().map(|r| r.len()).max().unwrap_or(0).max(8) + 2;
        let mut out = format!("{:width$}", "");
        for r in regions {
            out.push_str(&format!("{r:>width$}"));
        }
        for a in regions {
            out.push_str(&format!("\n{a:width$}"));
            for b in regions {
                let d = format_delay(self.delay(a, b));
                out.push_str(&format!("{d:>width$}"));
            }
        }
        out
    }
}

impl FromStr for LatencyMatrix {
    type Err = MatrixError;

    fn from_str(spec: &str) -> Result<LatencyMatrix, MatrixError> {
        LatencyMatrix::parse(spec)
    }
}

/// The canonical spec: parses back to an equal matrix.
impl fmt::Display for LatencyMatrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = self.uniform {
            return write!(f, "{}", humantime::format_duration(d));
        }
        let mut first = true;
        for ((a, b), d) in &self.pairs {
            let sep = if first { "" } else { "," };
            first = false;
            write!(f, "{sep}{a}:{b}={}", humantime::format_duration(*d))?;
        }
        Ok(())
    }
}

/// `80ms`, `1s 500ms`; zero as `0ms` rather than humantime's `0s`.
pub fn format_delay(d: Duration) -> String {
    if d.is_zero() {
        "0ms".to_string()
    } else {
        humantime::format_duration(d).to_string()
    }
}

fn ordered(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-south"];

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_single_duration_applies_to_every_pair_of_distinct_regions() {
        let m = LatencyMatrix::parse("80ms").unwrap();
        m.validate(&REGIONS).unwrap();
        assert_eq!(m.delay("us-east", "eu-west"), ms(80));
        assert_eq!(m.delay("eu-west", "us-east"), ms(80));
        assert_eq!(m.delay("us-east", "us-east"), Duration::ZERO);
        assert_eq!(m.max_delay(&REGIONS), ms(80));
        assert_eq!(m.max_delay(&["us-east"]), Duration::ZERO);
        assert_eq!(m.to_string(), "80ms");
    }

    #[test]
    fn a_list_is_symmetric_and_same_region_is_zero_unless_given() {
        let m: LatencyMatrix =
            "us-east:eu-west=80ms, us-east:ap-south=150ms,eu-west:ap-south=120ms,eu-west:eu-west=3ms".parse().unwrap();
        m.validate(&REGIONS).unwrap();
        assert_eq!(m.delay("ap-south", "us-east"), ms(150));
        assert_eq!(m.delay("us-east", "ap-south"), ms(150));
        assert_eq!(m.delay("ap-south", "eu-west"), ms(120));
        assert_eq!(m.delay("eu-west", "eu-west"), ms(3));
        assert_eq!(m.delay("us-east", "us-east"), Duration::ZERO);
        assert_eq!(m.max_delay(&REGIONS), ms(150));
        assert_eq!(m.to_string().parse::<LatencyMatrix>().unwrap(), m);
    }

    #[test]
    fn unknown_regions_and_missing_pairs_are_named() {
        let m = LatencyMatrix::parse("us-east:eu-west=80ms,us-east:us-west=150ms").unwrap();
        let err = m.validate(&REGIONS).unwrap_err();
        assert_eq!(
            err,
            MatrixError::UnknownRegion { region: "us-west".into(), known: "us-east, eu-west, ap-south".into() }
        );
        assert!(err.to_string().contains("unknown region \"us-west\""), "{err}");

        let m = LatencyMatrix::parse("us-east:eu-west=80ms").unwrap();
        m.validate(&["us-east", "eu-west"]).unwrap();
        let err = m.validate(&REGIONS).unwrap_err();
        assert_eq!(err, MatrixError::MissingPair { a: "us-east".into(), b: "ap-south".into() });
    }

    #[test]
    fn bad_specs_are_refused_with_the_syntax() {
        for spec in ["", "fast", "us-east:eu-west", "us-east=80ms", "us-east:eu-west=soon", "a:b:c=1ms", ":b=1ms"] {
            let err = LatencyMatrix::parse(spec).unwrap_err();
            assert!(matches!(err, MatrixError::Syntax { .. }), "{spec:?} gave {err:?}");
            assert!(err.to_string().contains("us-east:eu-west=80ms"), "no example in {err}");
        }
        let err = LatencyMatrix::parse("a:b=1ms,b:a=2ms").unwrap_err();
        assert_eq!(err, MatrixError::Duplicate { a: "a".into(), b: "b".into() });
    }

    #[test]
    fn the_table_shows_every_pair() {
        let m = LatencyMatrix::parse("us-east:eu-west=80ms,us-east:ap-south=150ms,eu-west:ap-south=120ms").unwrap();
        let table = m.table(&REGIONS);
        let lines: Vec<_> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[1].starts_with("us-east") && lines[1].ends_with("150ms"), "{table}");
        assert!(lines[3].contains("120ms") && lines[3].ends_with(" 0ms"), "{table}");
    }
}
