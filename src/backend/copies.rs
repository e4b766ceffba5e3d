//! Ordered KV slot copies split into batches a device may run in parallel.

/// Split the copies `src[i] -> dst[i]`, meant to run in order (as on the CPU), into consecutive
/// batches whose copies are independent and may run in parallel: a copy joins the current batch
/// unless it reads a slot the batch writes or writes a slot the batch reads or writes. Copies of
/// a slot onto itself are dropped. (Compacting an accepted tree path, `[2, 5] -> [1, 2]`, needs
/// two batches: slot 2 is read by the first copy and written by the second.)
pub fn independent_batches(src: &[u32], dst: &[u32]) -> Vec<(Vec<u32>, Vec<u32>)> {
    let mut batches: Vec<(Vec<u32>, Vec<u32>)> = Vec::new();
    let mut current: (Vec<u32>, Vec<u32>) = (Vec::new(), Vec::new());
    for (&s, &d) in src.iter().zip(dst).filter(|(s, d)| s != d) {
        if current.1.contains(&s) || current.0.contains(&d) || current.1.contains(&d) {
            batches.push(std::mem::take(&mut current));
        }
        current.0.push(s);
        current.1.push(d);
    }
    if !current.0.is_empty() {
        batches.push(current);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::independent_batches;

    #[test]
    fn copies_split_where_they_depend_on_each_other() {
        assert_eq!(independent_batches(&[0, 2, 5], &[0, 1, 2]), vec![(vec![2], vec![1]), (vec![5], vec![2])]);
        assert_eq!(independent_batches(&[1, 2, 3], &[9, 10, 11]), vec![(vec![1, 2, 3], vec![9, 10, 11])]);
        assert_eq!(independent_batches(&[1, 1], &[4, 4]), vec![(vec![1], vec![4]), (vec![1], vec![4])]);
        assert!(independent_batches(&[3], &[3]).is_empty());
    }
}
