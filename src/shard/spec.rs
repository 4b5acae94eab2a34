//! Which share of the selected tests this job runs: `--shard K/M`, or `--shard auto` read
//! from the CI system's own variables.

use std::fmt;

/// Shard `index` (1-based) of `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shard {
    pub(crate) index: usize,
    pub(crate) total: usize,
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.total)
    }
}

/// What `--shard` (or `shard` in pyproject.toml) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShardSpec {
    Fixed(Shard),
    /// From the CI system's variables, read when the run starts.
    Auto,
}

/// The CI systems `--shard auto` knows: their index and total variables, and whether the
/// index counts from 1.
const CI_VARIABLES: &[(&str, &str, &str, bool)] = &[
    ("GitLab CI", "CI_NODE_INDEX", "CI_NODE_TOTAL", true),
    ("CircleCI", "CIRCLE_NODE_INDEX", "CIRCLE_NODE_TOTAL", false),
    (
        "Buildkite",
        "BUILDKITE_PARALLEL_JOB",
        "BUILDKITE_PARALLEL_JOB_COUNT",
        false,
    ),
    ("Bazel", "TEST_SHARD_INDEX", "TEST_TOTAL_SHARDS", false),
];

impl ShardSpec {
    /// `K/M` (1 <= K <= M) or `auto`; the error is one line naming the value.
    pub(crate) fn parse(value: &str) -> Result<ShardSpec, String> {
        if value == "auto" {
            return Ok(ShardSpec::Auto);
        }
        let bad = || "expected K/M with 1 <= K <= M (e.g. 2/3), or `auto`".to_string();
        let (k, m) = value.split_once('/').ok_or_else(bad)?;
        let (index, total) = (
            k.trim().parse::<usize>().map_err(|_| bad())?,
            m.trim().parse::<usize>().map_err(|_| bad())?,
        );
        if index == 0 || total == 0 || index > total {
            return Err(bad());
        }
        Ok(ShardSpec::Fixed(Shard { index, total }))
    }

    /// The shard this job is: `auto` looks at the CI variables in `var`; `None` when `auto`
    /// finds a CI system that runs one job only (total 1 is no sharding).
    pub(crate) fn resolve(
        self,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Shard>, String> {
        match self {
            ShardSpec::Fixed(shard) => Ok(Some(shard)),
            ShardSpec::Auto => from_ci(var),
        }
    }
}

fn from_ci(var: impl Fn(&str) -> Option<String>) -> Result<Option<Shard>, String> {
    for &(system, index_var, total_var, one_based) in CI_VARIABLES {
        let (Some(index), Some(total)) = (var(index_var), var(total_var)) else {
            continue;
        };
        let number = |name: &str, text: &str| {
            text.trim()
                .parse::<usize>()
                .map_err(|_| format!("--shard auto: {system}'s {name} is '{text}', not a number"))
        };
        let (index, total) = (number(index_var, &index)?, number(total_var, &total)?);
        let index = if one_based { index } else { index + 1 };
        if total == 0 || index == 0 || index > total {
            return Err(format!(
                "--shard auto: {system}'s {index_var}={} and {total_var}={total} name no shard",
                var(index_var).unwrap_or_default()
            ));
        }
        if total == 1 {
            return Ok(None);
        }
        return Ok(Some(Shard { index, total }));
    }
    Err("--shard auto: no CI shard variables found (CI_NODE_INDEX/CI_NODE_TOTAL, CIRCLE_NODE_INDEX/CIRCLE_NODE_TOTAL, BUILDKITE_PARALLEL_JOB/BUILDKITE_PARALLEL_JOB_COUNT, TEST_SHARD_INDEX/TEST_TOTAL_SHARDS); on GitHub Actions pass --shard ${{ matrix.shard }}/${{ strategy.job-total }}".into())
}

/// Bazel asks a test runner that shards to touch this file.
pub(crate) fn acknowledge_bazel() {
    if let Some(path) = std::env::var_os("TEST_SHARD_STATUS_FILE") {
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(vars: &[(&str, &str)]) -> Result<Option<Shard>, String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ShardSpec::Auto.resolve(|name| vars.get(name).cloned())
    }

    fn shard(index: usize, total: usize) -> Option<Shard> {
        Some(Shard { index, total })
    }

    #[test]
    fn k_of_m() {
        assert_eq!(
            ShardSpec::parse("2/3"),
            Ok(ShardSpec::Fixed(Shard { index: 2, total: 3 }))
        );
        assert_eq!(ShardSpec::parse("auto"), Ok(ShardSpec::Auto));
        for bad in ["0/3", "4/3", "3", "a/b", "1/0", "", "/", "-1/3", "1/3/4"] {
            let err = ShardSpec::parse(bad).unwrap_err();
            assert!(err.contains("K/M"), "{bad}: {err}");
            assert!(!err.contains('\n'));
        }
    }

    #[test]
    fn each_ci_system_counts_its_own_way() {
        assert_eq!(
            resolve(&[("CI_NODE_INDEX", "1"), ("CI_NODE_TOTAL", "3")]),
            Ok(shard(1, 3))
        );
        assert_eq!(
            resolve(&[("CIRCLE_NODE_INDEX", "0"), ("CIRCLE_NODE_TOTAL", "3")]),
            Ok(shard(1, 3))
        );
        assert_eq!(
            resolve(&[
                ("BUILDKITE_PARALLEL_JOB", "2"),
                ("BUILDKITE_PARALLEL_JOB_COUNT", "3")
            ]),
            Ok(shard(3, 3))
        );
        assert_eq!(
            resolve(&[("TEST_SHARD_INDEX", "1"), ("TEST_TOTAL_SHARDS", "4")]),
            Ok(shard(2, 4))
        );
        // One job: no sharding.
        assert_eq!(
            resolve(&[("CI_NODE_INDEX", "1"), ("CI_NODE_TOTAL", "1")]),
            Ok(None)
        );
    }

    #[test]
    fn bad_or_missing_ci_variables_are_one_line_errors() {
        for vars in [
            &[][..],
            &[("CI_NODE_INDEX", "x"), ("CI_NODE_TOTAL", "3")],
            &[("CI_NODE_INDEX", "0"), ("CI_NODE_TOTAL", "3")],
            &[("CIRCLE_NODE_INDEX", "3"), ("CIRCLE_NODE_TOTAL", "3")],
            &[("CI_NODE_INDEX", "1")],
        ] {
            let err = resolve(vars).unwrap_err();
            assert!(err.starts_with("--shard auto: "), "{vars:?}: {err}");
            assert!(!err.contains('\n'));
        }
    }
}
