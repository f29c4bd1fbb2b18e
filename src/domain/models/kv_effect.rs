//! What changing Ollama's KV cache settings does to memory, for set_kv_cache:
//! the memory table before and after, the change in bytes, and whether each
//! side fits. A plan that would turn a fitting setup into one that does not
//! can then say so with the numbers before anything is recreated.
//!
//! Pure arithmetic over `memory_model::memory_table`, so it agrees with
//! select_profile to the byte.
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::domain::models::catalogue::ModelFacts;
use crate::domain::models::memory::{
    self as memory_model, HardwareFacts, KvCacheType, MemoryTable, Profile,
};

/// The Ollama settings that size the KV cache (`OLLAMA_KV_CACHE_TYPE`,
/// `OLLAMA_CONTEXT_LENGTH`, `OLLAMA_NUM_PARALLEL`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct KvSetting {
    pub kv_cache_type: KvCacheType,
    /// Tokens per slot.
    pub context_length: u32,
    /// Slots; 0 counts as 1.
    pub num_parallel: u32,
}

/// The memory effect of going from `before` to `after`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct KvMemoryEffect {
    pub profile: Profile,
    pub before: MemoryTable,
    pub after: MemoryTable,
    /// after.need − before.need, bytes (negative: memory freed).
    pub need_delta_bytes: i64,
    pub fits_before: bool,
    pub fits_after: bool,
    /// One line with the numbers, for a plan step's detail.
    // (The fit verdict and usable memory in it change second by second: plans
    // take `plan_line` instead.)
    pub summary: String,
    /// The same without what changes second by second (usable memory, the
    /// fit verdict): what a plan and its digest may hold. Not in the output
    /// (`summary` is).
    #[serde(skip)]
    #[schemars(skip)]
    pub plan_line: String,
}

fn gib(bytes: i128) -> String {
    let sign = if bytes < 0 { "-" } else { "" };
    let abs = bytes.unsigned_abs();
    let hundredths = (abs * 100 + (1u128 << 29)) >> 30;
    format!("{sign}{}.{:02} GiB", hundredths / 100, hundredths % 100)
}

/// Compares two KV settings for `model` on `profile`'s backend of `hw`.
pub fn kv_memory_effect(
    model: &ModelFacts,
    profile: Profile,
    hw: &HardwareFacts,
    before: &KvSetting,
    after: &KvSetting,
) -> KvMemoryEffect {
    let table = |s: &KvSetting| {
        memory_model::memory_table(
            model,
            s.context_length,
            s.kv_cache_type,
            s.num_parallel,
            profile,
            hw,
        )
    };
    let (b, a) = (table(before), table(after));
    let delta = i128::from(a.need_bytes) - i128::from(b.need_bytes);
    let need_delta_bytes =
        i64::try_from(delta).unwrap_or(if delta < 0 { i64::MIN } else { i64::MAX });
    let plan_line = format!(
        "{}: KV cache {} x{} at {} tokens -> {} x{} at {} tokens: need {} -> {} ({}{})",
        model.name,
        before.kv_cache_type.as_str(),
        before.num_parallel.max(1),
        before.context_length,
        after.kv_cache_type.as_str(),
        after.num_parallel.max(1),
        after.context_length,
        gib(i128::from(b.need_bytes)),
        gib(i128::from(a.need_bytes)),
        if delta >= 0 { "+" } else { "" },
        gib(delta),
    );
    let summary = format!(
        "{plan_line}, usable {}; {}",
        gib(i128::from(a.usable_bytes)),
        match (b.fits(), a.fits()) {
            (_, true) => "fits",
            (true, false) => "no longer fits",
            (false, false) => "still does not fit",
        }
    );
    KvMemoryEffect {
        profile,
        fits_before: b.fits(),
        fits_after: a.fits(),
        before: b,
        after: a,
        need_delta_bytes,
        summary,
        plan_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::models::catalogue as model_catalogue;
    use crate::domain::models::memory::GIB;

    fn gpu16() -> HardwareFacts {
        HardwareFacts {
            nvidia_vram_bytes: Some(16 * GIB),
            nvidia_compute_capability: Some("8.9".into()),
            memory_total_bytes: 64 * GIB,
            memory_available_bytes: 60 * GIB,
            logical_cores: 16,
            ..Default::default()
        }
    }

    #[test]
    fn q8_0_halves_the_cache_and_the_numbers_add_up() {
        let m = model_catalogue::lookup("llama3.1:8b").expect("catalogue");
        let f16 = KvSetting {
            kv_cache_type: KvCacheType::F16,
            context_length: 131_072,
            num_parallel: 1,
        };
        let q8 = KvSetting {
            kv_cache_type: KvCacheType::Q8_0,
            ..f16
        };
        let e = kv_memory_effect(&m, Profile::Analysis, &gpu16(), &f16, &q8);
        // 2 x 32 layers x 8 heads x 128 x 131072 tokens x 2 bytes = 16 GiB at f16.
        assert_eq!(e.before.kv_cache_bytes, 16 * GIB);
        assert_eq!(e.after.kv_cache_bytes, 17 * GIB / 2);
        assert_eq!(e.need_delta_bytes, -((16 * GIB - 17 * GIB / 2) as i64));
        assert!(!e.fits_before && e.fits_after, "{}", e.summary);
        assert!(e.summary.contains("f16 x1 at 131072") && e.summary.contains("fits"));
        // And back: the same numbers with the sign flipped.
        let back = kv_memory_effect(&m, Profile::Analysis, &gpu16(), &q8, &f16);
        assert_eq!(back.need_delta_bytes, -e.need_delta_bytes);
        assert!(back.summary.ends_with("no longer fits"), "{}", back.summary);
        // It agrees with select_profile's table.
        let t = memory_model::memory_table(
            &m,
            131_072,
            KvCacheType::Q8_0,
            1,
            Profile::Analysis,
            &gpu16(),
        );
        assert_eq!(t, e.after);
    }

    #[test]
    fn parallel_slots_multiply_the_cache() {
        let m = model_catalogue::lookup("qwen2.5:7b").expect("catalogue");
        let one = KvSetting {
            kv_cache_type: KvCacheType::Q8_0,
            context_length: 32_768,
            num_parallel: 1,
        };
        let four = KvSetting {
            num_parallel: 4,
            ..one
        };
        let e = kv_memory_effect(&m, Profile::Standard, &gpu16(), &one, &four);
        assert_eq!(e.after.kv_cache_bytes, 4 * e.before.kv_cache_bytes);
        assert_eq!(e.need_delta_bytes, (3 * e.before.kv_cache_bytes) as i64);
    }
}
