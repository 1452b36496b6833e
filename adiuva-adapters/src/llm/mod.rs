//! Language models: [`openai::OpenAiCompatible`], the [`ChatModel`] and [`Embedder`] over
//! any OpenAI-compatible API (OpenAI, Cerebras, Ollama, vLLM, llama.cpp, LM Studio), with
//! per-request keys (BYOK). Behind `testing`, [`fake::FakeOpenAi`] speaks the same wire
//! format on a local socket.
//!
//! [`ChatModel`]: adiuva_core::ports::llm::ChatModel
//! [`Embedder`]: adiuva_core::ports::llm::Embedder

#[cfg(feature = "testing")]
pub mod fake;
pub mod openai;

pub use openai::{OpenAiCompatible, OpenAiConfig};
