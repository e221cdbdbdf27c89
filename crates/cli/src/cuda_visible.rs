//! What `--device cuda:N` means under a scheduler: N counts the GPUs CUDA_VISIBLE_DEVICES
//! lists, not the machine's.
//!
//! The engine does no remapping of its own: the CUDA driver shows a process only the GPUs
//! that CUDA_VISIBLE_DEVICES lists (indices, or UUIDs such as `GPU-8f2c...`, in that
//! order) and numbers them from 0, so `--device cuda` is the first GPU that Slurm
//! (`--gres=gpu:1`, `--gpus-per-task`) or Kubernetes (`nvidia.com/gpu: 1`) assigned to the
//! task. This module checks the ordinal against that list before CUDA is touched and says
//! which GPU it picked, so that a wrong ordinal fails with one clear line instead of a
//! driver error.

/// Check `ordinal` against `visible` (the value of CUDA_VISIBLE_DEVICES, if set); on
/// success, a note naming the GPU it selects (`None` when the variable is unset).
pub fn check(ordinal: usize, visible: Option<&str>) -> Result<Option<String>, String> {
    let Some(v) = visible else {
        return Ok(None);
    };
    // CUDA stops reading the list at its first empty or invalid entry.
    let entries: Vec<&str> = v
        .split(',')
        .map(str::trim)
        .take_while(|e| !e.is_empty() && !e.starts_with('-'))
        .collect();
    match entries.get(ordinal) {
        Some(gpu) => Ok(Some(format!(
            "cuda:{ordinal} is GPU {gpu} (CUDA_VISIBLE_DEVICES={v}: the visible GPUs are numbered from 0)"
        ))),
        None if entries.is_empty() => Err(format!(
            "--device cuda:{ordinal}: CUDA_VISIBLE_DEVICES={v:?} makes no GPU visible to this process"
        )),
        None => Err(format!(
            "--device cuda:{ordinal}: CUDA_VISIBLE_DEVICES={v} makes {} GPU(s) visible, numbered \
             from 0 (cuda:0 is GPU {})",
            entries.len(),
            entries[0]
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn ordinals_count_the_visible_gpus() {
        assert_eq!(check(0, None), Ok(None));
        assert_eq!(
            check(5, None),
            Ok(None),
            "unset: every GPU, CUDA checks the ordinal"
        );
        let note = check(0, Some("3")).unwrap().unwrap();
        assert!(note.starts_with("cuda:0 is GPU 3"), "{note}");
        let note = check(1, Some("2,5")).unwrap().unwrap();
        assert!(note.starts_with("cuda:1 is GPU 5"), "{note}");
        let uuid = "GPU-8f2c1a77-0000-1111-2222-333344445555";
        assert!(check(0, Some(uuid)).unwrap().unwrap().contains(uuid));
    }

    #[test]
    fn ordinals_past_the_list_fail_clearly() {
        let err = check(1, Some("3")).unwrap_err();
        assert!(
            err.contains("makes 1 GPU(s) visible") && err.contains("cuda:0 is GPU 3"),
            "{err}"
        );
        assert!(check(0, Some("")).unwrap_err().contains("no GPU visible"));
        assert!(check(0, Some("-1")).unwrap_err().contains("no GPU visible"));
        // CUDA ignores what follows an invalid entry.
        assert!(check(1, Some("0,-1,2")).is_err());
        assert!(check(1, Some("0,,2")).is_err());
    }
}
