//! Scheduler behaviour through its public API: chunked prefill next to decoding
//! sequences, preemption order and re-admission, and admission errors.

use anyhow::{ensure, Context, Result};
use engine_scheduler::{
    AdmissionError, FinishReason, NewToken, SamplingParams, Scheduler, SchedulerConfig,
    SchedulerOutput, SeqId, SeqStatus, Sequence,
};

fn seq(id: SeqId, prompt_len: usize, max_tokens: usize) -> Sequence {
    let prompt = (0..prompt_len).map(|i| (i % 97) as u32 + 3).collect();
    let params = SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(max_tokens)
    };
    Sequence::new(id, prompt, params, vec![2])
}

/// Run one step with a fixed "model" that always samples token 5.
fn step(s: &mut Scheduler) -> (SchedulerOutput, Vec<(SeqId, FinishReason)>) {
    let out = s.schedule();
    let sampled: Vec<NewToken> = out
        .scheduled
        .iter()
        .filter(|x| x.samples)
        .map(|x| NewToken::new(x.seq_id, 5))
        .collect();
    let done = s.update_from_output(&out, &sampled);
    (out, done)
}

fn scheduled_tokens(out: &SchedulerOutput, id: SeqId) -> usize {
    out.scheduled
        .iter()
        .find(|x| x.seq_id == id)
        .map_or(0, |x| x.num_scheduled_tokens)
}

#[test]
fn chunked_prefill_keeps_decoders_running_and_long_prompt_progressing() -> Result<()> {
    let budget = 64;
    let mut s = Scheduler::new(SchedulerConfig {
        max_num_seqs: 16,
        max_num_batched_tokens: budget,
        max_model_len: 4096,
        block_size: 16,
        num_blocks: 1024,
        enable_prefix_caching: true,
    });
    let decoders: Vec<SeqId> = (0..8).collect();
    for &id in &decoders {
        s.add(seq(id, 3 + id as usize, 200))?; // 52 prompt tokens in all
    }
    // Prefill the eight short prompts; from then on each decodes one token per step.
    let (out, _) = step(&mut s);
    ensure!(out.scheduled.len() == 8 && out.scheduled.iter().all(|x| x.samples));
    let (out, _) = step(&mut s);
    ensure!(out.num_batched_tokens == 8, "eight decoders: {out:?}");

    let long: SeqId = 100;
    s.add(seq(long, 1000, 4))?;
    let mut missed = vec![0usize; decoders.len()];
    let mut steps = 0;
    let mut prefilled = 0;
    loop {
        let (out, _) = step(&mut s);
        steps += 1;
        ensure!(out.num_batched_tokens <= budget, "budget exceeded: {out:?}");
        ensure!(out.preempted.is_empty(), "ample cache must not preempt");
        for (k, &id) in decoders.iter().enumerate() {
            if scheduled_tokens(&out, id) == 0 {
                missed[k] += 1;
                ensure!(
                    missed[k] < 2,
                    "decoder {id} unscheduled two steps in a row (step {steps})"
                );
            } else {
                ensure!(
                    scheduled_tokens(&out, id) == 1,
                    "decoders compute one token"
                );
                missed[k] = 0;
            }
        }
        let n = scheduled_tokens(&out, long);
        ensure!(
            n > 0,
            "long prompt made no progress in step {steps}: {out:?}"
        );
        prefilled += n;
        let seq = s.seq(long).context("long prompt")?;
        ensure!(seq.num_computed_tokens == prefilled.min(1000));
        if out.scheduled.iter().any(|x| x.seq_id == long && x.samples) {
            break;
        }
        ensure!(steps < 100, "the long prompt never finished prefill");
    }
    ensure!(prefilled == 1000, "prefilled {prefilled}");
    // 8 decode tokens + a 56-token chunk per step: ceil(1000 / 56) = 18 steps.
    ensure!(
        steps == 1000usize.div_ceil(budget - 8),
        "took {steps} steps"
    );
    s.check_invariants().map_err(anyhow::Error::msg)?;
    Ok(())
}

#[test]
fn preemption_takes_the_most_recent_and_readmits_it_first() -> Result<()> {
    // 4 blocks of 4 tokens; at most 3 running. Requests 0, 1, 2 fill 3 blocks with their
    // prompts; 3 waits (max_num_seqs). When all three need a second block, 2 (the most
    // recently admitted) is preempted.
    let mut s = Scheduler::new(SchedulerConfig {
        max_num_seqs: 3,
        max_num_batched_tokens: 64,
        max_model_len: 64,
        block_size: 4,
        num_blocks: 4,
        enable_prefix_caching: false,
    });
    for id in 0..4 {
        s.add(seq(id, 4, if id == 0 { 3 } else { 4 }))?;
    }
    let (out, _) = step(&mut s);
    ensure!(out.admitted == vec![0, 1, 2], "admitted {:?}", out.admitted);
    ensure!(s.num_waiting() == 1);

    // Each now holds 5 tokens (needs 2 blocks); only one block is free.
    let (out, _) = step(&mut s);
    ensure!(out.preempted == vec![2], "preempted {:?}", out.preempted);
    ensure!(
        out.admitted.is_empty(),
        "no admission in a step that preempts"
    );
    let victim = s.seq(2).context("seq 2")?;
    ensure!(victim.num_computed_tokens == 0, "num_computed_tokens reset");
    ensure!(victim.status == SeqStatus::Waiting && victim.num_preemptions == 1);
    ensure!(victim.num_tokens() == 5, "its sampled token is kept");
    ensure!(s.block_table(2).is_empty());
    let ids: Vec<SeqId> = out.scheduled.iter().map(|x| x.seq_id).collect();
    ensure!(ids == vec![0, 1], "scheduled {ids:?}");

    // Run until 2 or 3 is admitted: 2 (preempted) must come before 3 (waiting longer).
    let mut first_readmitted = None;
    for _ in 0..20 {
        let (out, _) = step(&mut s);
        s.check_invariants().map_err(anyhow::Error::msg)?;
        if let Some(&id) = out.admitted.first() {
            first_readmitted = Some(id);
            let x = &out.scheduled[out.scheduled.len() - out.admitted.len()];
            ensure!(
                x.seq_id == id && x.num_computed_tokens == 0,
                "recompute from 0"
            );
            ensure!(
                x.num_scheduled_tokens == 5 && x.samples,
                "prompt + output recomputed"
            );
            break;
        }
    }
    ensure!(
        first_readmitted == Some(2),
        "readmitted {first_readmitted:?}"
    );

    // Everything finishes with its full output and the pool is empty.
    let mut finished = Vec::new();
    for _ in 0..50 {
        step(&mut s);
        finished.extend(s.take_finished());
        if !s.has_unfinished() {
            break;
        }
    }
    finished.extend(s.take_finished());
    ensure!(finished.len() == 4, "finished {}", finished.len());
    for f in &finished {
        ensure!(f.num_output_tokens() == f.params.max_tokens);
    }
    ensure!(s.kv().pool().num_free() == 4);
    Ok(())
}

#[test]
fn admission_errors_reject_only_that_request() -> Result<()> {
    let mut s = Scheduler::new(SchedulerConfig {
        max_num_seqs: 8,
        max_num_batched_tokens: 64,
        max_model_len: 32,
        block_size: 4,
        num_blocks: 4,
        enable_prefix_caching: false,
    });
    s.add(seq(0, 6, 2))?;
    let too_long_ctx = s.add(seq(1, 30, 5));
    ensure!(
        too_long_ctx
            == Err(AdmissionError::TooLongForContext {
                prompt_tokens: 30,
                max_tokens: 5,
                max_model_len: 32
            }),
        "{too_long_ctx:?}"
    );
    // 10 + 10 tokens = 5 blocks > 4 in the whole cache (but within the context).
    let too_long_cache = s.add(seq(2, 10, 10));
    ensure!(
        too_long_cache
            == Err(AdmissionError::TooLongForCache {
                prompt_tokens: 10,
                max_tokens: 10,
                needed: 5,
                num_blocks: 4
            }),
        "{too_long_cache:?}"
    );
    ensure!(s.add(seq(3, 0, 2)) == Err(AdmissionError::EmptyPrompt));
    ensure!(s.add(seq(0, 3, 2)) == Err(AdmissionError::DuplicateId(0)));
    // Exactly at both limits: 16 tokens = 4 blocks.
    s.add(seq(4, 12, 4))?;
    ensure!(s.num_waiting() == 2, "only the valid requests wait");
    ensure!(s.seq(1).is_none() && s.seq(2).is_none() && s.seq(3).is_none());

    let mut finished = Vec::new();
    for _ in 0..50 {
        step(&mut s);
        s.check_invariants().map_err(anyhow::Error::msg)?;
        finished.extend(s.take_finished());
        if !s.has_unfinished() {
            break;
        }
    }
    let mut ids: Vec<SeqId> = finished.iter().map(|f| f.id).collect();
    ids.sort_unstable();
    ensure!(ids == vec![0, 4], "finished {ids:?}");
    ensure!(finished
        .iter()
        .all(|f| f.num_output_tokens() == f.params.max_tokens
            && f.status == SeqStatus::Finished(FinishReason::Length)));
    Ok(())
}
