//! The flags of CCQ's re-allocation and of how it prices rungs, shared by `ccq quantize` and
//! `ccq compare`.

use super::args::named;
use ccq::search::audition::AuditionScore;
use clap::Args;

/// How CCQ re-allocates the rungs once the target is met, and what prices it uses.
#[derive(Args, Debug, Clone)]
pub struct PriceFlags {
    /// Once the target is met, re-allocate the rungs to the least summed bandit-loss rise the
    /// competition measured; the polish runs only where that keeps the policy (improved: true).
    #[arg(long)]
    pub reallocate: Option<bool>,
    /// In the re-allocation, price each rung at least at the standard error of its trial's
    /// rise, so that a rung measured within the noise is not free (improved: true).
    #[arg(long)]
    pub price_floor: Option<bool>,
    /// In the re-allocation, price each rung by its rise in tempered cross-entropy, the damage
    /// that rescaling the logits does not undo (improved: true).
    #[arg(long)]
    pub tempered_prices: Option<bool>,
    /// In the re-allocation, policies priced within one standard error of the least price are
    /// ties: take the one that uses the most of the budget (default false in both).
    #[arg(long)]
    pub noise_ties: Option<bool>,
    /// Before the re-allocation, price every rung below the search's policy on its weights, so a
    /// layer may go more than one rung below where the search left it (default false in both).
    #[arg(long)]
    pub lookahead_prices: Option<bool>,
    /// Before the re-allocation, price every rung of every layer, top to floor, around the
    /// search's policy on the FP model calibrated at it (where `--final-from fp` fine-tunes),
    /// and re-allocate by those prices alone (default false in both).
    #[arg(long)]
    pub fp_prices: Option<bool>,
    /// Before the re-allocation, price every rung of every layer, top to floor, each layer alone
    /// with the others at the top, on the FP model calibrated at the top (BatchNorm statistics
    /// as calibrated), and re-allocate by those prices alone (default false in both).
    #[arg(long)]
    pub top_prices: Option<bool>,
    /// After the re-allocation, audition its policy against its cheapest rivals (each a layer
    /// one rung away, the rest re-allocated): N finalists, each fine-tuned from the FP model on
    /// --audition-images training images and scored on the bandit split; the least loss wins
    /// (default off in both variants; 3 measured; 0 or 1: off).
    #[arg(long, value_name = "N")]
    pub audition: Option<usize>,
    /// Training images each finalist of the audition fine-tunes on [default: 6400].
    #[arg(long, value_name = "IMAGES")]
    pub audition_images: Option<usize>,
    /// What the audition scores its finalists by: `loss` (bandit cross-entropy) or `tempered`
    /// (the same at the temperature that minimises it) [default: tempered].
    #[arg(long, value_parser = named::<AuditionScore>())]
    pub audition_score: Option<AuditionScore>,
}
