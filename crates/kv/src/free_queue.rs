//! The free-block queue: blocks in the order they are reused, with O(1) removal from anywhere
//! (a prefix-cache hit takes a free block back out of the middle).

use crate::BlockId;

/// A block's neighbours while it is queued.
#[derive(Debug, Clone, Copy)]
struct Link {
    prev: Option<BlockId>,
    next: Option<BlockId>,
}

/// Doubly linked list threaded through one slot per block: `links[b]` is `Some` exactly while
/// block `b` is queued. The head is reused first.
#[derive(Debug)]
pub(crate) struct FreeQueue {
    links: Vec<Option<Link>>,
    head: Option<BlockId>,
    tail: Option<BlockId>,
    len: usize,
}

impl FreeQueue {
    /// A queue holding every block `0..num_blocks` in ascending order.
    pub(crate) fn full(num_blocks: BlockId) -> Self {
        let mut q = Self {
            links: vec![None; num_blocks as usize],
            head: None,
            tail: None,
            len: 0,
        };
        for b in 0..num_blocks {
            q.push_back(b);
        }
        q
    }

    /// Number of queued blocks.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether `block` is queued.
    pub(crate) fn contains(&self, block: BlockId) -> bool {
        self.links[block as usize].is_some()
    }

    /// Queues `block` last (reused after everything queued now).
    pub(crate) fn push_back(&mut self, block: BlockId) {
        debug_assert!(!self.contains(block), "block {block} queued twice");
        self.links[block as usize] = Some(Link {
            prev: self.tail,
            next: None,
        });
        match self.tail {
            Some(t) => self.set_next(t, Some(block)),
            None => self.head = Some(block),
        }
        self.tail = Some(block);
        self.len += 1;
    }

    /// Queues `block` first (reused before everything queued now).
    pub(crate) fn push_front(&mut self, block: BlockId) {
        debug_assert!(!self.contains(block), "block {block} queued twice");
        self.links[block as usize] = Some(Link {
            prev: None,
            next: self.head,
        });
        match self.head {
            Some(h) => self.set_prev(h, Some(block)),
            None => self.tail = Some(block),
        }
        self.head = Some(block);
        self.len += 1;
    }

    /// Takes the first block out of the queue.
    pub(crate) fn pop_front(&mut self) -> Option<BlockId> {
        let head = self.head?;
        self.remove(head);
        Some(head)
    }

    /// Takes `block` out of the queue wherever it is; false when it was not queued.
    pub(crate) fn remove(&mut self, block: BlockId) -> bool {
        let Some(link) = self.links[block as usize].take() else {
            return false;
        };
        match link.prev {
            Some(p) => self.set_next(p, link.next),
            None => self.head = link.next,
        }
        match link.next {
            Some(n) => self.set_prev(n, link.prev),
            None => self.tail = link.prev,
        }
        self.len -= 1;
        true
    }

    /// Queued blocks, first to be reused first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = BlockId> + '_ {
        std::iter::successors(self.head, |&b| {
            self.links[b as usize].and_then(|link| link.next)
        })
    }

    /// Points queued `block` forward at `next`.
    fn set_next(&mut self, block: BlockId, next: Option<BlockId>) {
        if let Some(link) = self.queued_link(block) {
            link.next = next;
        }
    }

    /// Points queued `block` back at `prev`.
    fn set_prev(&mut self, block: BlockId, prev: Option<BlockId>) {
        if let Some(link) = self.queued_link(block) {
            link.prev = prev;
        }
    }

    /// The link of a block that a neighbour or the head/tail points at, so is queued.
    fn queued_link(&mut self, block: BlockId) -> Option<&mut Link> {
        let link = self.links[block as usize].as_mut();
        debug_assert!(link.is_some(), "block {block} is linked to but not queued");
        link
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]
mod tests {
    use super::*;

    fn order(q: &FreeQueue) -> Vec<BlockId> {
        q.iter().collect()
    }

    #[test]
    fn starts_full_in_ascending_order() {
        let q = FreeQueue::full(4);
        assert_eq!(order(&q), [0, 1, 2, 3]);
        assert_eq!(q.len(), 4);
    }

    #[test]
    fn removal_from_head_middle_and_tail_keeps_the_links() {
        let mut q = FreeQueue::full(5);
        assert!(q.remove(2));
        assert!(!q.remove(2));
        assert_eq!(order(&q), [0, 1, 3, 4]);
        assert!(q.remove(0));
        assert!(q.remove(4));
        assert_eq!(order(&q), [1, 3]);
        q.push_back(4);
        q.push_front(2);
        assert_eq!(order(&q), [2, 1, 3, 4]);
        assert_eq!(q.len(), 4);
        assert!(!q.contains(0));
    }

    #[test]
    fn pops_in_order_until_empty_and_refills() {
        let mut q = FreeQueue::full(3);
        assert_eq!(q.pop_front(), Some(0));
        assert_eq!(q.pop_front(), Some(1));
        assert_eq!(q.pop_front(), Some(2));
        assert_eq!(q.pop_front(), None);
        assert_eq!(q.len(), 0);
        q.push_front(1);
        q.push_back(0);
        assert_eq!(order(&q), [1, 0]);
        assert_eq!(q.pop_front(), Some(1));
        assert_eq!(order(&q), [0]);
    }
}
