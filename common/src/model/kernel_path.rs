//! Which set of hand-written kernels runs: one decision, made once per process (and per thread
//! in the tests, which force each path in turn).
//!
//! Every path gives the same bits (the AVX-512 kernels keep the AVX2 kernels' per-output order of
//! operations and their FMAs, and the portable ones round each multiply-add once, as an FMA
//! does), so workers on different CPUs still train the same model; the choice only changes the
//! speed. `SIAMESE_KERNELS=avx512|avx2|portable` overrides the detected
//! path, for benchmarking.

use std::sync::OnceLock;

/// The environment variable that overrides the detected path.
pub const KERNELS_ENV: &str = "SIAMESE_KERNELS";

/// A set of kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelPath {
    /// AVX-512 (F, VL) with FMA: 16-lane conv kernels and masked updates; AVX2 elsewhere.
    Avx512,
    /// AVX2 with FMA: eight lanes.
    Avx2,
    /// Plain Rust for the baseline target.
    Portable,
}

impl KernelPath {
    /// The name `SIAMESE_KERNELS` takes for this path.
    pub fn name(self) -> &'static str {
        match self {
            KernelPath::Avx512 => "avx512",
            KernelPath::Avx2 => "avx2",
            KernelPath::Portable => "portable",
        }
    }

    /// The path named `s`, if any.
    pub fn parse(s: &str) -> Option<Self> {
        [KernelPath::Avx512, KernelPath::Avx2, KernelPath::Portable]
            .into_iter()
            .find(|p| p.name() == s.trim().to_ascii_lowercase())
    }

    /// Whether this CPU can run the path.
    pub fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx2 = has!("avx2") && has!("fma");
            match self {
                KernelPath::Avx512 => avx2 && has!("avx512f") && has!("avx512vl"),
                KernelPath::Avx2 => avx2,
                KernelPath::Portable => true,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == KernelPath::Portable
        }
    }

    /// The fastest path this CPU supports.
    pub fn detect() -> Self {
        [KernelPath::Avx512, KernelPath::Avx2]
            .into_iter()
            .find(|p| p.supported())
            .unwrap_or(KernelPath::Portable)
    }

    /// The detected path, or the one `value` (of `SIAMESE_KERNELS`) names; an unknown name or a
    /// path this CPU lacks is an error naming the choices.
    pub fn choose(value: Option<&str>) -> Result<Self, String> {
        let Some(value) = value else {
            return Ok(Self::detect());
        };
        let path = Self::parse(value)
            .ok_or_else(|| format!("{KERNELS_ENV}={value:?}: expected avx512, avx2 or portable"))?;
        if !path.supported() {
            return Err(format!(
                "{KERNELS_ENV}={value:?}: this CPU lacks the {} instructions",
                path.name()
            ));
        }
        Ok(path)
    }

    /// The path of this process: `SIAMESE_KERNELS` if set and usable, else the detected one
    /// (a bad value is logged once and ignored: it must never stop training or crash it).
    pub fn selected() -> Self {
        static SELECTED: OnceLock<KernelPath> = OnceLock::new();
        *SELECTED.get_or_init(|| {
            let value = std::env::var(KERNELS_ENV).ok();
            let path = Self::choose(value.as_deref()).unwrap_or_else(|e| {
                let path = Self::detect();
                tracing::warn!("{e}; using the {} kernels", path.name());
                path
            });
            if cfg!(target_arch = "x86_64") && value.is_none() && path == KernelPath::Portable {
                // Without FMA the portable kernels emulate it to keep the bits (fused_mul_add.rs).
                tracing::warn!(
                    "this CPU lacks AVX2 or FMA: the portable kernels run, training the same \
                     bits as on other CPUs but about 15 times slower than AVX2"
                );
            }
            path
        })
    }

    /// The path the kernels take on this thread.
    pub(crate) fn current() -> Self {
        #[cfg(test)]
        if let Some(p) = FORCED.with(|f| f.get()) {
            return p;
        }
        Self::selected()
    }
}

/// Defines `fn $name(args) -> ret` that runs the `#[inline(always)]` function `$lanes` compiled
/// for the widest registers of this thread's [`KernelPath`]: 16 lanes with AVX-512F, 8 with
/// AVX2, the baseline target's otherwise. For element-wise loops of IEEE operations (add,
/// multiply, divide, square root, conversions; Rust never fuses them into FMAs), so every path
/// gives the same bits and only the speed depends on the CPU.
macro_rules! lane_kernel {
    ($(#[$doc:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty = $lanes:ident) => {
        $(#[$doc])*
        $vis fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f")]
            unsafe fn avx512($($arg: $ty),*) -> $ret {
                $lanes($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2")]
            unsafe fn avx2($($arg: $ty),*) -> $ret {
                $lanes($($arg),*)
            }
            match $crate::model::KernelPath::current() {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `KernelPath` chose this path only where the CPU has AVX-512F.
                $crate::model::KernelPath::Avx512 => unsafe { avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `KernelPath` chose this path only where the CPU has AVX2.
                $crate::model::KernelPath::Avx2 => unsafe { avx2($($arg),*) },
                _ => $lanes($($arg),*),
            }
        }
    };
}
pub(crate) use lane_kernel;

#[cfg(test)]
thread_local! {
    /// Set on the threads of [`forced_pool`], where the kernels take that path.
    static FORCED: std::cell::Cell<Option<KernelPath>> = const { std::cell::Cell::new(None) };
}

/// A rayon pool of `threads` threads on which the kernels take `path`, so that the tests reach
/// every path on one CPU (per thread, so other tests running meanwhile keep theirs).
#[cfg(test)]
pub(crate) fn forced_pool(path: KernelPath, threads: usize) -> rayon::ThreadPool {
    assert!(path.supported(), "this CPU cannot run the {path:?} kernels");
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .start_handler(move |_| FORCED.with(|f| f.set(Some(path))))
        .build()
        .expect("a rayon pool")
}

/// The SIMD paths this CPU can run, fastest first, for the tests that compare them.
#[cfg(test)]
pub(crate) fn simd_paths() -> Vec<KernelPath> {
    [KernelPath::Avx512, KernelPath::Avx2]
        .into_iter()
        .filter(|p| p.supported())
        .collect()
}

/// `f`'s result on every path this CPU can run, the portable one first: for the tests that
/// check a kernel gives the same bits on each.
#[cfg(test)]
pub(crate) fn on_every_path<R: Send>(f: impl Fn() -> R + Sync) -> Vec<(KernelPath, R)> {
    std::iter::once(KernelPath::Portable)
        .chain(simd_paths())
        .map(|p| (p, forced_pool(p, 1).install(&f)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_override_names_a_path_or_is_refused() {
        assert_eq!(KernelPath::choose(None), Ok(KernelPath::detect()));
        assert_eq!(
            KernelPath::choose(Some("portable")),
            Ok(KernelPath::Portable)
        );
        let err = KernelPath::choose(Some("sse9")).unwrap_err();
        assert!(err.contains("avx512, avx2 or portable"), "{err}");
        for p in [KernelPath::Avx512, KernelPath::Avx2] {
            match KernelPath::choose(Some(p.name())) {
                Ok(got) => assert!(got == p && p.supported()),
                Err(e) => assert!(!p.supported() && e.contains("lacks"), "{e}"),
            }
        }
    }

    #[test]
    fn a_forced_pool_takes_its_path() {
        for p in simd_paths().into_iter().chain([KernelPath::Portable]) {
            assert_eq!(forced_pool(p, 1).install(KernelPath::current), p);
        }
    }
}
