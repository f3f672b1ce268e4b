use super::*;

const T: Duration = Duration::from_secs(30);

fn group_error(result: Result<NcclGroup, NcclError>) -> NcclError {
    match result {
        Ok(_) => panic!("joined a group that should have been refused"),
        Err(e) => e,
    }
}

// The checks before any NCCL call need neither a GPU nor libnccl at run time.

#[test]
fn refuses_a_rank_outside_the_world() {
    let e = group_error(NcclGroup::join(&[0; ID_LEN], 2, 2, &Device::Cpu, T));
    assert!(
        matches!(
            e,
            NcclError::InvalidGroup {
                rank: 2,
                world: 2,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("rank 2 of world 2"), "{e}");
}

#[test]
fn refuses_an_id_of_the_wrong_length() {
    let e = group_error(NcclGroup::join(&[0; 16], 0, 1, &Device::Cpu, T));
    assert!(e.to_string().contains("got 16"), "{e}");
}

#[test]
fn refuses_a_cpu_device() {
    let e = group_error(NcclGroup::join(&[0; ID_LEN], 0, 1, &Device::Cpu, T));
    assert!(matches!(e, NcclError::NotCuda { .. }), "{e}");
}

// The rest need a GPU: `cargo test --release --features nccl -p siamese-common nccl -- --ignored`.

#[test]
#[ignore = "needs a CUDA GPU and libnccl"]
fn a_world_of_one_sums_to_the_gradient_itself() {
    let device = Device::new_cuda(0).unwrap();
    let id = unique_id().unwrap();
    let group = NcclGroup::join(&id, 0, 1, &device, T).unwrap();
    let grad = Tensor::arange(0f32, 12., &device)
        .unwrap()
        .reshape((3, 4))
        .unwrap();
    let sum = group.all_reduce_sum(&grad).unwrap();
    assert_eq!(sum.dims(), &[3, 4]);
    assert_eq!(
        sum.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        grad.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
    // A transposed view is not contiguous: refused, not silently summed in the wrong order.
    let e = group.all_reduce_sum(&grad.t().unwrap()).unwrap_err();
    assert!(matches!(e, NcclError::BadTensor { .. }), "{e}");
    group.abort();
}

#[test]
#[ignore = "needs a CUDA GPU and libnccl"]
fn a_missing_rank_times_out_with_a_clear_error() {
    let device = Device::new_cuda(0).unwrap();
    let id = unique_id().unwrap();
    let e = group_error(NcclGroup::join(&id, 0, 2, &device, Duration::from_secs(3)));
    assert!(
        matches!(
            e,
            NcclError::InitTimeout {
                rank: 0,
                world: 2,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("rank 0 of world 2"), "{e}");
}
