//! Stable hashing of request ids, and `--shard i/n | auto` selection.
//!
//! An id's key is its canonical JSON text (`"a"` for the string a, `7` for the number 7),
//! so the string `"7"` and the number `7` are different ids. Sharding hashes that key
//! with 64-bit FNV-1a, a fixed function with no per-process seed, so every process, on
//! every machine and every run, puts an id in the same shard. Lines without a readable
//! id are sharded by their line number, so each bad line is reported by exactly one shard.
//!
//! `--shard auto` reads the shard from the environment a scheduler gives each task (see
//! [`Shard::from_env`]), so one batch script serves every task of a Slurm job array, an
//! `srun` step or a Kubernetes Indexed Job.

use anyhow::{bail, Context};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a of `bytes`, continuing from `state`.
fn fnv1a_from(state: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(state, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME))
}

/// 64-bit FNV-1a.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_from(FNV_OFFSET, bytes)
}

/// A 128-bit fingerprint of an id key: two independent FNV-1a streams. Kept instead of
/// the key itself in the seen/done sets (16 bytes per id whatever its length); a
/// collision among a billion ids has odds of about 1e-21.
pub fn fingerprint(key: &str) -> u128 {
    let lo = fnv1a(key.as_bytes());
    let hi = fnv1a_from(fnv1a(b"engine-run"), key.as_bytes());
    (u128::from(hi) << 64) | u128::from(lo)
}

/// This process's part of the job: ids whose hash mod `count` is `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    /// The whole job.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Parse `i/n` with `0 <= i < n`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let (i, n) = s
            .split_once('/')
            .with_context(|| format!("--shard {s}: expected i/n, e.g. 0/4"))?;
        let index: u64 = i
            .trim()
            .parse()
            .with_context(|| format!("--shard {s}: bad index {i:?}"))?;
        let count: u64 = n
            .trim()
            .parse()
            .with_context(|| format!("--shard {s}: bad count {n:?}"))?;
        if count == 0 || index >= count {
            bail!("--shard {s}: need 0 <= i < n");
        }
        Ok(Self { index, count })
    }

    /// This task's shard from a scheduler's environment (`var` reads a variable), and a
    /// sentence naming the variables used. Looked for in this order:
    /// 1. a Slurm job array: SLURM_ARRAY_TASK_ID with SLURM_ARRAY_TASK_MIN / _MAX / _STEP
    ///    or SLURM_ARRAY_TASK_COUNT (an array must be one range: 0-7, 1-8 or 0-14:2);
    ///    inside an `srun` step of several tasks, each task takes its own part of it;
    /// 2. an `srun` step: SLURM_PROCID of SLURM_NTASKS (only inside a step, where
    ///    SLURM_STEP_ID is set: a batch script's SLURM_NTASKS is the whole allocation);
    /// 3. a Kubernetes Indexed Job: JOB_COMPLETION_INDEX of JOB_COMPLETIONS (Kubernetes
    ///    does not export the completion count: the manifest sets JOB_COMPLETIONS);
    /// 4. torchrun and friends: RANK of WORLD_SIZE.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<(Self, String)> {
        let num = |name: &str| -> anyhow::Result<Option<u64>> {
            match var(name) {
                None => Ok(None),
                Some(v) => v.trim().parse().map(Some).with_context(|| {
                    format!("--shard auto: {name}={v:?} is not a non-negative integer")
                }),
            }
        };
        let step = if var("SLURM_STEP_ID").is_some() {
            num("SLURM_PROCID")?.zip(num("SLURM_NTASKS")?)
        } else {
            None
        };
        let (shard, from) = if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
            let array = slurm_array(id, &num)?;
            match step.filter(|&(_, n)| n > 1) {
                None => array,
                Some((p, n)) => (
                    Shard::checked(array.0.index * n + p, array.0.count * n, "SLURM_PROCID")?,
                    format!("{}, task SLURM_PROCID={p} of SLURM_NTASKS={n}", array.1),
                ),
            }
        } else if let Some((p, n)) = step {
            let s = Shard::checked(p, n, "SLURM_PROCID")?;
            (s, format!("SLURM_PROCID={p} of SLURM_NTASKS={n}"))
        } else if let Some(i) = num("JOB_COMPLETION_INDEX")? {
            let n = num("JOB_COMPLETIONS")?.with_context(|| {
                format!(
                    "--shard auto: JOB_COMPLETION_INDEX={i} is set but JOB_COMPLETIONS is not; \
                     set it in the Job's manifest to .spec.completions"
                )
            })?;
            let s = Shard::checked(i, n, "JOB_COMPLETION_INDEX")?;
            (
                s,
                format!("JOB_COMPLETION_INDEX={i} of JOB_COMPLETIONS={n}"),
            )
        } else if let Some(r) = num("RANK")? {
            let n =
                num("WORLD_SIZE")?.context("--shard auto: RANK is set but WORLD_SIZE is not")?;
            (
                Shard::checked(r, n, "RANK")?,
                format!("RANK={r} of WORLD_SIZE={n}"),
            )
        } else {
            bail!(
                "--shard auto: no scheduler environment found (looked for \
                 SLURM_ARRAY_TASK_ID, SLURM_PROCID + SLURM_NTASKS in an srun step, \
                 JOB_COMPLETION_INDEX + JOB_COMPLETIONS, RANK + WORLD_SIZE); pass --shard i/n"
            )
        };
        Ok((shard, from))
    }

    /// `index/count`, or an error naming the variable `what` that gave the index.
    fn checked(index: u64, count: u64, what: &str) -> anyhow::Result<Self> {
        if count == 0 || index >= count {
            bail!("--shard auto: {what} gives shard {index} of {count}: need 0 <= i < n");
        }
        Ok(Self { index, count })
    }

    /// Does the id with this canonical key belong to this shard?
    pub fn owns_key(&self, key: &str) -> bool {
        fnv1a(key.as_bytes()) % self.count == self.index
    }

    /// Does a line without a readable id belong to this shard?
    pub fn owns_line(&self, line_no: u64) -> bool {
        self.owns_key(&format!("line:{line_no}"))
    }
}

/// The shard of Slurm array task `id`: its position in the array's range.
fn slurm_array(
    id: u64,
    num: &impl Fn(&str) -> anyhow::Result<Option<u64>>,
) -> anyhow::Result<(Shard, String)> {
    let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
    let step = num("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
    let told = num("SLURM_ARRAY_TASK_COUNT")?;
    let range = num("SLURM_ARRAY_TASK_MAX")?.map(|max| max.saturating_sub(min) / step + 1);
    let count = range.or(told).context(
        "--shard auto: SLURM_ARRAY_TASK_ID is set but neither SLURM_ARRAY_TASK_COUNT \
         nor SLURM_ARRAY_TASK_MAX is",
    )?;
    let not_a_range = id < min
        || !(id - min).is_multiple_of(step)
        || matches!((range, told), (Some(r), Some(t)) if r != t);
    if not_a_range {
        bail!(
            "--shard auto: Slurm array task {id} is not one of a single range (min {min}, \
             step {step}, {} tasks): submit the array as one range (--array=0-{}) or pass \
             --shard i/n",
            told.unwrap_or(count),
            told.unwrap_or(count).saturating_sub(1)
        );
    }
    let shard = Shard::checked((id - min) / step, count, "SLURM_ARRAY_TASK_ID")?;
    let from = format!(
        "SLURM_ARRAY_TASK_ID={id} of the array {min}-{}{}",
        min + (count - 1) * step,
        if step > 1 {
            format!(":{step}")
        } else {
            String::new()
        }
    );
    Ok((shard, from))
}

/// `--shard`: a fixed part, or `auto` (from the scheduler's environment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardSpec {
    Fixed(Shard),
    Auto,
}

impl ShardSpec {
    /// Parse `i/n` or `auto`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        if s.trim() == "auto" {
            Ok(Self::Auto)
        } else {
            Shard::parse(s).map(Self::Fixed)
        }
    }

    /// The shard to run: fixed, or read from this process's environment (and said).
    pub fn resolve(self) -> anyhow::Result<Shard> {
        match self {
            Self::Fixed(s) => Ok(s),
            Self::Auto => {
                let (s, from) = Shard::from_env(|k| std::env::var(k).ok())?;
                crate::say(&format!(
                    "--shard auto: shard {}/{} from {from}",
                    s.index, s.count
                ));
                Ok(s)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn shards_partition_ids() {
        let shards: Vec<Shard> = (0..3).map(|i| Shard { index: i, count: 3 }).collect();
        let mut sizes = [0usize; 3];
        for id in 0..3000 {
            let key = format!("\"req-{id}\"");
            let owners: Vec<usize> = (0..3).filter(|&i| shards[i].owns_key(&key)).collect();
            assert_eq!(owners.len(), 1, "{key}");
            sizes[owners[0]] += 1;
        }
        assert!(sizes.iter().all(|&n| n > 800), "unbalanced: {sizes:?}");
    }

    #[test]
    fn parse_rejects_bad_specs() {
        assert_eq!(Shard::parse("1/3").unwrap(), Shard { index: 1, count: 3 });
        for bad in ["3/3", "0/0", "1", "a/2", "-1/2"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fingerprints_differ_for_string_and_number_ids() {
        assert_ne!(fingerprint("\"7\""), fingerprint("7"));
        assert_eq!(fingerprint("7"), fingerprint("7"));
    }

    fn env(pairs: &[(&str, &str)]) -> anyhow::Result<(Shard, String)> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Shard::from_env(|k| map.get(k).cloned())
    }

    fn shard(index: u64, count: u64) -> Shard {
        Shard { index, count }
    }

    /// What Slurm 22.05 set in task `id` of `sbatch --array=MIN-MAX[:STEP]`.
    fn array(id: u64, min: u64, max: u64, step: u64, count: u64) -> Vec<(String, String)> {
        [
            ("SLURM_ARRAY_TASK_ID", id),
            ("SLURM_ARRAY_TASK_MIN", min),
            ("SLURM_ARRAY_TASK_MAX", max),
            ("SLURM_ARRAY_TASK_STEP", step),
            ("SLURM_ARRAY_TASK_COUNT", count),
            // A batch script's own task: not a step, so not a second level of sharding.
            ("SLURM_PROCID", 0),
            ("SLURM_NTASKS", 2),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn env_of(pairs: &[(String, String)]) -> anyhow::Result<(Shard, String)> {
        let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (&**k, &**v)).collect();
        env(&refs)
    }

    #[test]
    fn slurm_arrays_map_their_range_onto_shards() {
        let (s, from) = env_of(&array(1, 0, 2, 1, 3)).unwrap();
        assert_eq!(s, shard(1, 3));
        assert_eq!(from, "SLURM_ARRAY_TASK_ID=1 of the array 0-2");
        assert_eq!(env_of(&array(5, 1, 8, 1, 8)).unwrap().0, shard(4, 8));
        let (s, from) = env_of(&array(6, 2, 10, 2, 5)).unwrap();
        assert_eq!(
            (s, from.as_str()),
            (shard(2, 5), "SLURM_ARRAY_TASK_ID=6 of the array 2-10:2")
        );
        // Only the count (no min/max): ids from 0.
        let only_count = [
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ];
        assert_eq!(env(&only_count).unwrap().0, shard(2, 4));
    }

    #[test]
    fn arrays_that_are_not_one_range_are_refused() {
        // --array=0,2,7: min 0, max 7 but 3 tasks.
        let err = env_of(&array(2, 0, 7, 1, 3)).unwrap_err().to_string();
        assert!(
            err.contains("single range") && err.contains("--array=0-2"),
            "{err}"
        );
        // A task id off the step.
        assert!(env_of(&array(3, 0, 8, 2, 5)).is_err());
        let err = env(&[("SLURM_ARRAY_TASK_ID", "1")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("SLURM_ARRAY_TASK_COUNT"), "{err}");
        let err = env(&[
            ("SLURM_ARRAY_TASK_ID", "x"),
            ("SLURM_ARRAY_TASK_COUNT", "2"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("SLURM_ARRAY_TASK_ID=\"x\""), "{err}");
    }

    #[test]
    fn srun_steps_shard_alone_or_inside_an_array_task() {
        let step = [
            ("SLURM_STEP_ID", "0"),
            ("SLURM_PROCID", "3"),
            ("SLURM_NTASKS", "4"),
        ];
        let (s, from) = env(&step).unwrap();
        assert_eq!(
            (s, from.as_str()),
            (shard(3, 4), "SLURM_PROCID=3 of SLURM_NTASKS=4")
        );
        // Without SLURM_STEP_ID (a batch script with -n 4) it is not a step.
        assert!(env(&step[1..]).is_err());
        // Array task 1 of 0-2, srun step task 1 of 2: shard 1 * 2 + 1 of 3 * 2.
        let mut both = array(1, 0, 2, 1, 3);
        both.retain(|(k, _)| !k.starts_with("SLURM_PROCID") && k != "SLURM_NTASKS");
        for (k, v) in [
            ("SLURM_STEP_ID", "0"),
            ("SLURM_PROCID", "1"),
            ("SLURM_NTASKS", "2"),
        ] {
            both.push((k.into(), v.into()));
        }
        assert_eq!(env_of(&both).unwrap().0, shard(3, 6));
    }

    #[test]
    fn kubernetes_and_torchrun_and_nothing() {
        let k8s = [("JOB_COMPLETION_INDEX", "4"), ("JOB_COMPLETIONS", "5")];
        assert_eq!(env(&k8s).unwrap().0, shard(4, 5));
        let err = env(&k8s[..1]).unwrap_err().to_string();
        assert!(err.contains("JOB_COMPLETIONS"), "{err}");
        let bad = [("JOB_COMPLETION_INDEX", "5"), ("JOB_COMPLETIONS", "5")];
        assert!(env(&bad)
            .unwrap_err()
            .to_string()
            .contains("need 0 <= i < n"));
        let torch = [("RANK", "0"), ("WORLD_SIZE", "8")];
        assert_eq!(
            env(&torch).unwrap(),
            (shard(0, 8), "RANK=0 of WORLD_SIZE=8".into())
        );
        // Slurm comes first when both are present.
        let mixed = [
            ("RANK", "0"),
            ("WORLD_SIZE", "8"),
            ("SLURM_ARRAY_TASK_ID", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "2"),
        ];
        assert_eq!(env(&mixed).unwrap().0, shard(1, 2));
        let err = env(&[]).unwrap_err().to_string();
        assert!(err.contains("no scheduler environment") && err.contains("--shard i/n"));
    }

    #[test]
    fn shard_spec_parses_auto_and_fixed() {
        assert_eq!(ShardSpec::parse("auto").unwrap(), ShardSpec::Auto);
        assert_eq!(
            ShardSpec::parse("2/5").unwrap(),
            ShardSpec::Fixed(shard(2, 5))
        );
        assert!(ShardSpec::parse("automatic").is_err());
    }
}
