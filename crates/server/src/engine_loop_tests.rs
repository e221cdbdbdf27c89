//! The engine loop on a tiny dummy model (context 32, byte-level tokenizer): admission
//! checks, 429s, aborts of vanished clients, deadlines, and streamed deltas that add up
//! to what `Engine::generate` produces alone.

use super::*;
use candle_core::{DType, Device};
use engine_core::EngineConfig;
use engine_model::{load_model, KernelChoice, LoadOptions};
use engine_scheduler::SamplingParams;
use tokio::sync::oneshot;

fn tiny_engine(num_blocks: usize) -> Engine {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.json");
    std::fs::write(
        &path,
        r#"{"name":"tiny","config":{"model_type":"llama","vocab_size":300,"hidden_size":32,
        "intermediate_size":64,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
        "rms_norm_eps":1e-5,"max_position_embeddings":32,"bos_token_id":256,"eos_token_id":257}}"#,
    )
    .unwrap();
    let opts = LoadOptions {
        dtype: DType::F32,
        device: Device::Cpu,
        seed: 3,
        tokenizer: None,
        kernels: KernelChoice::Candle,
        quant: Default::default(),
    };
    let model = load_model(&format!("dummy:{}", path.display()), &opts, &|_| {}).unwrap();
    let cfg = EngineConfig {
        block_size: 4,
        num_blocks: Some(num_blocks),
        ..Default::default()
    };
    Engine::new(model, cfg).unwrap()
}

struct Harness {
    lp: EngineLoop,
    tx: mpsc::Sender<Submission>,
}

struct Pending {
    events: mpsc::UnboundedReceiver<Event>,
    reply: oneshot::Receiver<Result<Admitted, ApiError>>,
}

fn harness(num_blocks: usize, max_waiting: usize, timeout: Option<Duration>) -> Harness {
    let (tx, rx) = mpsc::channel(64);
    let cfg = LoopConfig {
        max_waiting,
        request_timeout: timeout,
    };
    let lp = EngineLoop::new(
        tiny_engine(num_blocks),
        cfg,
        Arc::new(Metrics::default()),
        rx,
    );
    Harness { lp, tx }
}

impl Harness {
    fn submit(&self, prompt: &str, max_tokens: Option<usize>) -> Pending {
        let (events_tx, events) = mpsc::unbounded_channel();
        let (reply_tx, reply) = oneshot::channel();
        let s = Submission {
            prompt: Prompt::Text(prompt.into()),
            params: SamplingParams {
                ignore_eos: true,
                ..SamplingParams::greedy(1)
            },
            max_tokens,
            received: Instant::now(),
            events: events_tx,
            reply: reply_tx,
        };
        self.tx.try_send(s).unwrap_or_else(|_| panic!("queue full"));
        Pending { events, reply }
    }

    fn blocks_in_use(&self) -> usize {
        self.lp.engine.scheduler().kv().num_blocks_in_use()
    }
}

impl Pending {
    fn admitted(&mut self) -> Result<Admitted, ApiError> {
        self.reply.try_recv().expect("a reply")
    }

    /// Drain events: (text, tokens, finish, failure).
    fn drain(&mut self) -> (String, usize, Option<FinishReason>, Option<ApiError>) {
        let (mut text, mut n, mut fin, mut err) = (String::new(), 0, None, None);
        while let Ok(e) = self.events.try_recv() {
            match e {
                Event::Delta(d) => {
                    text.push_str(&d.text);
                    n += d.num_tokens;
                    fin = fin.or(d.finish);
                }
                Event::Failed(e) => err = Some(e),
            }
        }
        (text, n, fin, err)
    }
}

#[test]
fn context_checks_and_a_full_waiting_queue() {
    let mut h = harness(64, 2, None);
    let mut too_long = h.submit(&"x".repeat(40), Some(1));
    let mut too_many = h.submit("abc", Some(30));
    let mut a = h.submit("abc", Some(4));
    let mut b = h.submit("abd", Some(4));
    let mut c = h.submit("abe", Some(4));
    h.lp.turn();
    let e = too_long.admitted().unwrap_err();
    assert_eq!(e.status, 400);
    assert!(
        e.message
            .contains("context is 32 tokens; the prompt has 41"),
        "{}",
        e.message
    );
    let e = too_many.admitted().unwrap_err();
    assert!(
        e.message
            .contains("the prompt has 4 and max_tokens asks for 30"),
        "{}",
        e.message
    );
    assert_eq!(e.code, Some("context_length_exceeded"));
    assert_eq!(a.admitted().unwrap().prompt_tokens, 4); // BOS + 3 bytes
    assert!(b.admitted().is_ok());
    let e = c.admitted().unwrap_err();
    assert_eq!((e.status.as_u16(), e.retry_after_s), (429, Some(1)));
    assert!(e.message.contains("--max-waiting 2"), "{}", e.message);
    let m = &h.lp.metrics;
    assert_eq!(
        (m.requests(Outcome::Invalid), m.requests(Outcome::Rejected)),
        (2, 1)
    );
}

#[test]
fn streamed_deltas_add_up_to_the_engine_alone_and_blocks_return() {
    let mut h = harness(64, 8, None);
    let mut p = h.submit("hello", Some(6));
    let (mut text, mut n, mut fin) = (String::new(), 0, None);
    for _ in 0..20 {
        h.lp.turn();
        let (t, k, f, e) = p.drain();
        assert!(e.is_none());
        text.push_str(&t);
        n += k;
        fin = fin.or(f);
    }
    assert_eq!(p.admitted().unwrap().prompt_tokens, 6);
    assert_eq!((n, fin), (6, Some(FinishReason::Length)));
    let mut alone = tiny_engine(64);
    let params = SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(6)
    };
    let out = alone
        .generate(vec![(Prompt::Text("hello".into()), params)])
        .unwrap();
    let out = out.into_iter().next().unwrap().unwrap();
    assert_eq!(text, out.text);
    assert_eq!(h.blocks_in_use(), 0);
    let m = &h.lp.metrics;
    assert_eq!(m.requests(Outcome::Ok), 1);
    assert_eq!(m.generation_tokens.load(Relaxed), 6);
    assert_eq!((m.ttft.count(), m.itl.count(), m.e2e.count()), (1, 5, 1));
    assert_eq!(m.blocks_in_use.load(Relaxed), 0);
}

#[test]
fn a_vanished_client_is_aborted_and_its_blocks_freed() {
    let mut h = harness(64, 8, None);
    let mut p = h.submit("hello there", Some(20));
    h.lp.turn();
    h.lp.turn();
    assert!(p.admitted().is_ok());
    assert!(h.blocks_in_use() > 0);
    drop(p);
    h.lp.turn();
    assert_eq!(h.blocks_in_use(), 0);
    assert!(!h.lp.engine.has_unfinished());
    assert_eq!(h.lp.metrics.requests(Outcome::Aborted), 1);
    assert_eq!(h.lp.metrics.requests(Outcome::Ok), 0);
}

#[test]
fn a_request_past_its_deadline_fails_with_504() {
    let mut h = harness(64, 8, Some(Duration::from_millis(1)));
    let mut p = h.submit("hello", Some(20));
    h.lp.turn();
    std::thread::sleep(Duration::from_millis(5));
    h.lp.turn();
    let (_, n, fin, err) = p.drain();
    let err = err.expect("a timeout");
    assert_eq!(err.status, 504);
    assert!(err.message.contains("--request-timeout"), "{}", err.message);
    assert!(n < 20 && fin.is_none());
    assert_eq!(h.blocks_in_use(), 0);
    assert_eq!(h.lp.metrics.requests(Outcome::Timeout), 1);
}

#[test]
fn logprobs_follow_the_tokens() {
    let mut h = harness(64, 8, None);
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let (reply_tx, _reply) = oneshot::channel();
    let params = SamplingParams {
        logprobs: Some(2),
        ignore_eos: true,
        ..SamplingParams::greedy(1)
    };
    let s = Submission {
        prompt: Prompt::Text("hi".into()),
        params,
        max_tokens: Some(3),
        received: Instant::now(),
        events: events_tx,
        reply: reply_tx,
    };
    h.tx.try_send(s).unwrap_or_else(|_| panic!("queue full"));
    let mut lps = Vec::new();
    for _ in 0..10 {
        h.lp.turn();
    }
    while let Ok(Event::Delta(d)) = events.try_recv() {
        assert_eq!(d.logprobs.len(), d.num_tokens);
        lps.extend(d.logprobs);
    }
    assert_eq!(lps.len(), 3);
    for t in &lps {
        assert_eq!(t.top.len(), 2);
        // Greedy: the chosen token is the most likely one.
        assert!((t.top[0].1 - t.logprob).abs() < 1e-6);
    }
}
