//! Scheduler and block pool hot-path costs.
//!
//! - `schedule+update/256_decoding`: one `schedule()` + `update_from_output()` round with
//!   256 running sequences each decoding one token (blocks grow as they cross block
//!   boundaries; a sequence that finishes is replaced so the batch stays at 256).
//! - `block_pool/get+free/N`: take `N` blocks from a 4096-block pool and give them back.
//!
//! Run: `cargo bench -p engine-scheduler --bench schedule`.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use engine_scheduler::{
    BlockId, BlockPool, NewToken, SamplingParams, Scheduler, SchedulerConfig, SeqId, Sequence,
};

const NUM_SEQS: usize = 256;
const PROMPT_LEN: usize = 100;
const MAX_TOKENS: usize = 1_000;

fn new_seq(id: SeqId) -> Sequence {
    let prompt = (0..PROMPT_LEN)
        .map(|i| ((i * 31 + id as usize) % 30_000) as u32)
        .collect();
    let params = SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(MAX_TOKENS)
    };
    Sequence::new(id, prompt, params, vec![2])
}

/// 256 sequences admitted, prefilled and decoding.
fn decoding_scheduler() -> (Scheduler, SeqId) {
    let mut s = Scheduler::new(SchedulerConfig {
        max_num_seqs: NUM_SEQS,
        max_num_batched_tokens: 8192,
        max_model_len: 4096,
        block_size: 16,
        num_blocks: NUM_SEQS * (PROMPT_LEN + MAX_TOKENS).div_ceil(16) + 64,
        enable_prefix_caching: true,
    });
    for id in 0..NUM_SEQS as SeqId {
        s.add(new_seq(id)).expect("fits");
    }
    while s.num_waiting() > 0 || s.num_running() < NUM_SEQS {
        round(&mut s, &mut (NUM_SEQS as SeqId));
    }
    round(&mut s, &mut (NUM_SEQS as SeqId));
    (s, NUM_SEQS as SeqId)
}

/// One step: schedule, "sample" token 7 for every sampling sequence, update; replace the
/// finished so that the batch stays full.
fn round(s: &mut Scheduler, next_id: &mut SeqId) -> usize {
    let out = s.schedule();
    let sampled: Vec<NewToken> = out
        .scheduled
        .iter()
        .filter(|x| x.samples)
        .map(|x| NewToken::new(x.seq_id, 7))
        .collect();
    let done = s.update_from_output(&out, &sampled);
    for _ in s.take_finished() {
        s.add(new_seq(*next_id)).expect("fits");
        *next_id += 1;
    }
    black_box(done.len());
    out.scheduled.len()
}

fn bench_schedule(c: &mut Criterion) {
    let (mut s, mut next_id) = decoding_scheduler();
    assert_eq!(
        round(&mut s, &mut next_id),
        NUM_SEQS,
        "all 256 decode each step"
    );
    c.bench_function("schedule+update/256_decoding", |b| {
        b.iter(|| round(&mut s, &mut next_id))
    });
    // Reset when the sequences would run out of tokens: a fresh decoding batch per
    // sample batch keeps every measured round a pure 256-way decode step.
    c.bench_function("schedule+update/256_decoding_fresh", |b| {
        b.iter_batched(
            decoding_scheduler,
            // Return the scheduler so that dropping it is not timed.
            |(mut s, mut next)| {
                round(&mut s, &mut next);
                s
            },
            BatchSize::LargeInput,
        )
    });
}

fn bench_block_pool(c: &mut Criterion) {
    for n in [1usize, 16, 256] {
        let mut pool = BlockPool::new(4096);
        // Warm the pool's order: half its blocks cached and freed in a shuffled order.
        let all = pool.get_new_blocks(2048).expect("fits");
        for (i, &b) in all.iter().enumerate() {
            pool.cache_block(b, i as u64);
        }
        let shuffled: Vec<BlockId> = all.iter().rev().step_by(3).copied().collect();
        pool.free_blocks(&shuffled).expect("held");
        c.bench_function(&format!("block_pool/get+free/{n}"), |b| {
            b.iter(|| {
                let got = pool.get_new_blocks(black_box(n)).expect("fits");
                pool.free_blocks(&got).expect("held");
            })
        });
    }
}

criterion_group!(benches, bench_schedule, bench_block_pool);
criterion_main!(benches);
