//! The kernels' sources, compiled by NVRTC for the device's architecture
//! at first use and cached on disk as a cubin keyed by a hash of the
//! sources, the options, NVRTC's version and the architecture.

use std::ffi::{c_char, c_int, CStr, CString};
use std::path::PathBuf;

use cudarc::nvrtc::{result as nvrtc, sys as nvrtc_sys};

use crate::CudaError;

/// Every kernel, as one module: shared definitions first.
const SOURCES: [(&str, &str); 5] = [
    ("common.cuh", include_str!("ops/common.cuh")),
    ("blocks.cuh", include_str!("ops/blocks.cuh")),
    ("matmul.cu", include_str!("ops/matmul.cu")),
    ("elementwise.cu", include_str!("ops/elementwise.cu")),
    ("attention.cu", include_str!("ops/attention.cu")),
];

fn source() -> String {
    let mut s = String::new();
    for (name, text) in SOURCES {
        s.push_str(&format!("// ---- {name}\n{text}\n"));
    }
    s
}

fn options(arch: &str) -> Vec<String> {
    vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".into(),
        // No --use_fast_math: its sinf is wrong for the large angles of
        // late positions, and its divisions would change quantization.
        "--fmad=true".into(),
        "--extra-device-vectorization".into(),
    ]
}

/// 64-bit FNV-1a: a cache key that stays the same across builds.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn nvrtc_version() -> (c_int, c_int) {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: plain out-parameters; the library is loaded (checked by the caller).
    unsafe { nvrtc_sys::nvrtcVersion(&mut major, &mut minor) };
    (major, minor)
}

/// $QUARREL_CUDA_CACHE, else ~/.cache/quarrel/cuda.
fn cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("QUARREL_CUDA_CACHE") {
        return Some(PathBuf::from(dir));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("quarrel").join("cuda"))
}

/// The module's cubin for `arch` (e.g. "sm_90"), from the cache or freshly
/// compiled (then cached; a cache that cannot be written is not an error).
pub(crate) fn cubin(arch: &str) -> Result<Vec<u8>, CudaError> {
    let src = source();
    let opts = options(arch);
    let (major, minor) = nvrtc_version();
    let key = fnv1a(&[
        src.as_bytes(),
        opts.join(" ").as_bytes(),
        format!("nvrtc {major}.{minor}").as_bytes(),
    ]);
    let path = cache_dir().map(|d| d.join(format!("kernels-{key:016x}-{arch}.cubin")));
    if let Some(bytes) = path.as_ref().and_then(|p| std::fs::read(p).ok()) {
        return Ok(bytes);
    }
    let bytes = compile(&src, &opts)?;
    if let Some(p) = &path {
        if let Some(dir) = p.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        // Written whole under another name first, so a reader never sees half a file.
        let tmp = p.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, &bytes).is_ok() {
            let _ = std::fs::rename(&tmp, p);
        }
    }
    Ok(bytes)
}

fn compile(src: &str, opts: &[String]) -> Result<Vec<u8>, CudaError> {
    let csrc = CString::new(src).expect("kernel sources hold no NUL");
    let name = CString::new("quarrel.cu").expect("no NUL");
    let prog =
        nvrtc::create_program(&csrc, Some(&name)).map_err(|e| CudaError::Compile(e.to_string()))?;
    // SAFETY: `prog` is a live program until destroyed below; the buffers
    // handed to NVRTC are sized by the calls that precede them.
    let result = unsafe {
        match nvrtc::compile_program(prog, opts) {
            Err(e) => {
                let log = match nvrtc::get_program_log(prog) {
                    Ok(l) if !l.is_empty() => {
                        CStr::from_ptr(l.as_ptr()).to_string_lossy().into_owned()
                    }
                    _ => String::new(),
                };
                Err(CudaError::Compile(format!("{e}: {log}")))
            }
            Ok(()) => {
                let mut size = 0usize;
                let r = nvrtc_sys::nvrtcGetCUBINSize(prog, &mut size);
                if r != nvrtc_sys::nvrtcResult::NVRTC_SUCCESS || size == 0 {
                    Err(CudaError::Compile(format!("no cubin ({r:?})")))
                } else {
                    let mut buf = vec![0u8; size];
                    let r = nvrtc_sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut c_char);
                    if r == nvrtc_sys::nvrtcResult::NVRTC_SUCCESS {
                        Ok(buf)
                    } else {
                        Err(CudaError::Compile(format!("cannot read the cubin ({r:?})")))
                    }
                }
            }
        }
    };
    // SAFETY: `prog` was created above and is destroyed once.
    let _ = unsafe { nvrtc::destroy_program(prog) };
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compiles every kernel for Hopper where NVRTC can be opened (it
    /// needs no GPU), and checks that each kernel the launchers name is in
    /// the cubin.
    #[test]
    fn kernels_compile() {
        // SAFETY: only tries to open the library.
        if !unsafe { nvrtc_sys::is_culib_present() } {
            eprintln!("SKIPPED: NVRTC (libnvrtc) not found; kernels not compiled");
            return;
        }
        let cubin = compile(&source(), &options("sm_90")).expect("kernels compile");
        for name in crate::device::kernel_names() {
            let sym = format!("{name}\0");
            assert!(
                cubin.windows(sym.len()).any(|w| w == sym.as_bytes()),
                "kernel {name} missing from the cubin"
            );
        }
    }
}
