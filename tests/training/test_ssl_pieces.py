"""Hand-checked pieces of the learning methods: robust losses, adaptive thresholds, the mixture split."""

import math

import numpy as np
import pytest
import torch

from training.losses import asymmetric_loss, consistency_loss, gce_loss, masked_bce, per_sample_bce
from training.methods.dividemix import DivideMix, clean_probability
from training.methods.fixmatch import adaptive_thresholds, pseudo_labels

NAN = float("nan")


def test_asl_by_hand_and_its_limits():
    z = torch.tensor([[0.0, 0.0]])
    y = torch.tensor([[1.0, 0.0]])
    # p = 0.5. Positive (gamma_pos=0): -log 0.5. Negative: p_m = 0.45, -(0.45**4) log(0.55)
    expected = (math.log(2) - 0.45**4 * math.log(0.55)) / 2
    assert asymmetric_loss(z, y).item() == pytest.approx(expected, rel=1e-5)
    # with no focusing and no clip, ASL is plain BCE
    logits = torch.randn(3, 4)
    targets = torch.tensor([[1, 0, NAN, 1], [0, 0, 1, NAN], [1, 1, 0, 0]], dtype=torch.float32)
    assert asymmetric_loss(logits, targets, gamma_neg=0, clip=0).item() == pytest.approx(
        masked_bce(logits, targets).item(), rel=1e-5
    )
    # easy negatives (p < clip) cost nothing: a missed positive the model is unsure of is not punished hard
    assert asymmetric_loss(torch.tensor([[-4.0]]), torch.tensor([[0.0]])).item() == 0.0


def test_gce_by_hand():
    z = torch.tensor([[0.0, math.log(3)]])  # p = 0.5, 0.75
    y = torch.tensor([[1.0, 0.0]])
    q = 0.7
    expected = ((1 - 0.5**q) / q + (1 - 0.25**q) / q) / 2
    assert gce_loss(z, y, q=q).item() == pytest.approx(expected, rel=1e-5)
    # bounded: a confidently "wrong" label costs at most 1/q
    assert gce_loss(torch.tensor([[30.0]]), torch.tensor([[0.0]]), q=q).item() <= 1 / q + 1e-6


def test_consistency_and_per_sample_loss():
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[1.0, 0.5]])
    assert consistency_loss(s, t).item() == pytest.approx((0.25 + 0.0) / 2)
    assert consistency_loss(s, t, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(0.25)
    per = per_sample_bce(torch.zeros(1, 2), torch.tensor([[1.0, NAN]]))
    assert per[0, 0].item() == pytest.approx(math.log(2)) and math.isnan(per[0, 1].item())


def test_adaptive_thresholds_relax_for_poorly_learned_tags():
    status = torch.tensor([0.9, 0.45, 0.0])
    tau_pos, tau_neg = adaptive_thresholds(status, tau_min=0.7, tau_max=0.95)
    assert tau_pos[0].item() == pytest.approx(0.95)  # best-learned tag: the strict threshold
    # beta = 0.5 -> warped 0.5 / 1.5 = 1/3 -> 0.7 + 0.25/3
    assert tau_pos[1].item() == pytest.approx(0.7 + 0.25 / 3)
    assert tau_pos[2].item() == pytest.approx(0.7)
    assert torch.allclose(tau_neg, 1 - tau_pos)


def test_pseudo_labels_are_positive_negative_or_ignored_per_tag():
    probs = torch.tensor([[0.96, 0.5, 0.02], [0.75, 0.2, 0.31]])
    tau_pos = torch.tensor([0.95, 0.7, 0.7])
    pl = pseudo_labels(probs, tau_pos, 1 - tau_pos)
    assert pl[0, 0] == 1 and math.isnan(pl[0, 1]) and pl[0, 2] == 0
    assert math.isnan(pl[1, 0]) and pl[1, 1] == 0 and math.isnan(pl[1, 2])


def test_mixture_split_finds_the_high_loss_mode():
    rng = np.random.default_rng(0)
    n_clean, n_noisy = 180, 20
    # tag 0: labels given as 0, most with low loss, a few missed positives with high loss
    losses = np.concatenate([rng.normal(0.1, 0.05, n_clean), rng.normal(2.0, 0.3, n_noisy)]).clip(0)
    labels = np.zeros(n_clean + n_noisy)
    prob = clean_probability(losses[:, None], labels[:, None])
    assert (prob[:n_clean, 0] > 0.5).mean() > 0.95
    assert (prob[n_clean:, 0] < 0.5).mean() > 0.95
    # unknown labels stay unknown, small groups stay clean
    labels2 = labels.copy()
    labels2[:5] = np.nan
    labels2[5:8] = 1
    prob2 = clean_probability(losses[:, None], labels2[:, None])
    assert np.isnan(prob2[:5, 0]).all() and (prob2[5:8, 0] == 1).all()


def test_dividemix_drops_likely_wrong_labels_and_refines_the_rest():
    from tests.conftest import TINY_OVERRIDES
    from training.config import load_config
    from training.model import build_model

    m = DivideMix(build_model(load_config("default", TINY_OVERRIDES).model, 2))
    m.clean = torch.tensor([[0.9, 0.1], [NAN, 1.0]])
    labels = torch.tensor([[1.0, 0.0], [NAN, 1.0]])
    teacher = torch.tensor([[0.5, 0.9], [0.3, 0.2]])
    y = m.targets(labels, torch.tensor([0, 1]), teacher)
    assert y[0, 0].item() == pytest.approx(0.9 * 1 + 0.1 * 0.5)  # refined
    assert math.isnan(y[0, 1].item())  # likely wrong -> blank -> SSL
    assert math.isnan(y[1, 0].item()) and y[1, 1].item() == pytest.approx(1.0)


def test_ema_reaches_its_target_decay_within_a_short_run():
    from torch import nn

    from training.methods.ema import EMA

    net = nn.Linear(2, 1, bias=False)
    ema = EMA(net, decay=0.99)
    with torch.no_grad():
        net.weight.fill_(1.0)
        ema.model.weight.fill_(0.0)
    ema.update(net, step=200)  # past the warm-up: exactly the target decay
    assert ema.model.weight[0, 0].item() == pytest.approx(0.01)
    with torch.no_grad():
        ema.model.weight.fill_(0.0)
    ema.update(net, step=0)  # first step: mostly the student
    assert ema.model.weight[0, 0].item() == pytest.approx(0.5)


def test_tag_head_bias_starts_at_the_prior():
    from tests.conftest import TINY_OVERRIDES
    from training.config import load_config
    from training.model import build_model, init_tag_prior

    model = build_model(load_config("default", TINY_OVERRIDES).model, 3)
    nan = float("nan")
    labels = torch.tensor([[1.0, 0.0, nan], [0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [nan, 0.0, 0.0]])
    prior = init_tag_prior(model, labels, eps=0.0 + 1e-6)
    assert prior.tolist() == pytest.approx([1 / 3, 1 / 4, 2 / 3], abs=1e-4)
    assert torch.sigmoid(model.tag_head.bias).tolist() == pytest.approx([1 / 3, 1 / 4, 2 / 3], abs=1e-4)


def test_class_aware_pseudo_labels_by_rank_and_prior():
    from training.methods.cap import class_aware_pseudo_labels

    probs = np.linspace(0, 1, 100, dtype=np.float32)[:, None].repeat(2, 1)
    probs[:, 1] = probs[::-1, 1]  # the second tag ranks the pool the other way round
    labels, tau_pos, tau_neg = class_aware_pseudo_labels(probs, np.array([0.1, 0.5]), keep_pos=0.8, keep_neg=0.9)
    # tag 0: prior 0.1 -> the top 8 positive, the bottom 81 negative, 11 blank in between
    assert np.flatnonzero(labels[:, 0] == 1).tolist() == list(range(92, 100))
    assert np.flatnonzero(labels[:, 0] == 0).tolist() == list(range(0, 81))
    assert np.isnan(labels[81:92, 0]).all()
    assert tau_pos[0] == pytest.approx(probs[92, 0]) and tau_neg[0] == pytest.approx(probs[80, 0])
    # tag 1: prior 0.5 -> 40 positives, 45 negatives, from the other end
    assert (labels[:40, 1] == 1).all() and (labels[55:, 1] == 0).all() and np.isnan(labels[40:55, 1]).all()


def test_cap_prior_is_noise_corrected():
    from tests.conftest import TINY_OVERRIDES
    from training.config import load_config
    from training.methods.cap import ClassAwarePseudoLabels
    from training.model import build_model

    m = ClassAwarePseudoLabels(
        build_model(load_config("default", TINY_OVERRIDES).model, 1), miss_rate=0.3, fp_rate=0.05
    )
    labels = np.array([[1.0]] * 23 + [[0.0]] * 177 + [[np.nan]] * 50)  # observed 11.5 % of known
    assert m.priors(labels)[0] == pytest.approx(0.1)


def test_doubtful_labels_from_a_label_issues_csv(tmp_path):
    from training.methods.ema import doubtful_mask

    csv = tmp_path / "issues.csv"
    csv.write_text(
        "path,tag,given,predicted,score\nb.png,noisy,0,0.9,0.9\na.png,blurry,1,0.2,0.8\nb.png,blurry,0,0.1,0.1\n"
    )
    mask = doubtful_mask(csv, ["/data/a.png", "/data/b.png"], ["blurry", "noisy"], top=2)
    assert mask.tolist() == [[True, False], [False, True]]  # the two highest scores, by file name

    # defect synthesis (a Mean Teacher) trains without them: no gradient where a doubtful label was given
    from types import SimpleNamespace

    from tests.conftest import TINY_OVERRIDES
    from training.config import load_config
    from training.methods.defect_synthesis import DefectSynthesis
    from training.model import build_model

    cfg = load_config("synthesis_forward", TINY_OVERRIDES)
    torch.manual_seed(0)
    model = build_model(cfg.model, 2)
    method = DefectSynthesis(
        model, quality_weight=0.0, **(cfg.method.params | {"doubtful": str(csv), "doubtful_top": 2})
    )
    method.tags = ["blurry", "noisy"]
    assert method.on_epoch_start(0, SimpleNamespace(paths=["/data/a.png", "/data/b.png"]), "cpu") == {
        "doubtful_blanked": 2.0
    }
    v = load_config("default", TINY_OVERRIDES).model.views
    images = torch.randint(0, 256, (2, v, 64, 64, 3), dtype=torch.uint8)
    batch = {
        "images": images,
        "labels": torch.tensor([[1.0, 0.0], [0.0, 0.0]]),
        "quality": torch.rand(2),
        "index": torch.arange(2),
    }
    captured = {}

    def keep(_module, _inputs, output):
        if "logits" not in captured:  # the labeled batch's pass comes first
            output.retain_grad()
            captured["logits"] = output

    model.tag_head.register_forward_hook(keep)
    method.synth_weight = method.rank_weight = 0.0
    loss, _ = method.train_step(batch, None, 0)
    loss.backward()
    grad = captured["logits"].grad
    assert (grad[0, 0] == 0) and (grad[1, 1] == 0)  # a.png's blurry, b.png's noisy: blanked
    assert (grad[0, 1] != 0) and (grad[1, 0] != 0)


def test_kl_consistency_keeps_pushing_a_confident_student():
    teacher = torch.tensor([[0.5, 0.2]])
    same = torch.logit(teacher)
    assert consistency_loss(same, teacher, kind="kl").item() == pytest.approx(0.0, abs=1e-6)

    def grad(kind: str) -> float:
        x = torch.tensor([[-7.0, -1.3862944]], requires_grad=True)  # confident 0 vs teacher 0.5; agrees on tag 2
        consistency_loss(x, teacher, kind=kind).backward()
        return x.grad[0, 0].item()

    # d/dlogit of the KL is (p_s - p_t) / 2 tags; the MSE's fades with p_s (1 - p_s)
    assert grad("kl") == pytest.approx((torch.sigmoid(torch.tensor(-7.0)).item() - 0.5) / 2, rel=1e-4)
    assert abs(grad("mse")) < 0.01 * abs(grad("kl"))
    with pytest.raises(ValueError):
        consistency_loss(same, teacher, kind="l1")


def test_the_grid_views_numbers_join_the_heads_and_skip_the_backbone():
    from training.model import CreativeModel

    torch.manual_seed(0)
    model = CreativeModel("test_resnet", num_tags=3, views=3, grid_view=True).eval()
    dim = model.backbone.num_features
    assert model.tag_head.in_features == 2 * dim + 3  # two picture views, three numbers
    seen = []
    model.backbone.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    x = torch.randint(0, 256, (2, 3, 32, 32, 3), dtype=torch.uint8)
    x[:, -1] = torch.tensor([64, 128, 128], dtype=torch.uint8)  # a creative without JPEG evidence
    with torch.no_grad():
        f = model.features(x)
        assert seen == [4]  # 2 creatives x 2 picture views: the grid view never reaches the backbone
        np.testing.assert_allclose(f[:, -3:].numpy(), 0.0)
        tags, _ = model(x)
        blocky = x.clone()
        blocky[:, -1] = torch.tensor([160, 250, 200], dtype=torch.uint8)
        assert not torch.allclose(model(blocky)[0], tags)  # the numbers reach the heads
        np.testing.assert_allclose(model.features(blocky)[:, -3:].numpy(), [[24.0, 30.5, 18.0]] * 2)
        assert model.features(x[:, :1]).shape == (2, dim)  # a single window (a method's embedding): no grid
        centre = x.clone()
        centre[:, -1, 8:24, 8:24] = 255
        assert torch.equal(model(centre)[0], tags)  # without a profile only the grid's pixel is read


def test_the_grid_views_profile_is_read_off_its_inner_square_and_passes_an_mlp():
    from training.model import PROFILE_HIDDEN, CreativeModel

    torch.manual_seed(0)
    model = CreativeModel("test_resnet", num_tags=3, views=3, grid_view=True, grid_profile=True).eval()
    dim = model.backbone.num_features
    assert model.tag_head.in_features == 2 * dim + 6 + PROFILE_HIDDEN
    x = torch.randint(0, 256, (2, 3, 32, 32, 3), dtype=torch.uint8)
    x[:, -1] = torch.tensor([64, 128, 128], dtype=torch.uint8)
    x[:, -1, 8:24, 8:24] = torch.tensor([128, 128, 128], dtype=torch.uint8)  # sharp edges: log2 ratios of 1
    with torch.no_grad():
        f = model.features(x)
        np.testing.assert_allclose(f[:, 2 * dim : 2 * dim + 6].numpy(), 0.0)
        ramps = x.clone()
        ramps[:, -1, 8:24, 8:24] = torch.tensor([192, 176, 128], dtype=torch.uint8)  # an upscale's ramps
        g = model.features(ramps)
        np.testing.assert_allclose(g[:, 2 * dim + 3 : 2 * dim + 6].numpy(), [[16.0, 12.0, 0.0]] * 2)
        assert not torch.allclose(g[:, -PROFILE_HIDDEN:], f[:, -PROFILE_HIDDEN:])  # through the MLP too
        assert not torch.allclose(model(ramps)[0], model(x)[0])


def test_a_checkpoint_loads_with_the_views_its_spec_names_whatever_the_config_default():
    from creative_qa.taxonomy import load_taxonomy
    from tests.conftest import TINY_OVERRIDES
    from training.checkpoint import Checkpoint
    from training.config import load_config
    from training.loop import spec_of
    from training.model import build_model, model_from_checkpoint

    for grid in (0, 1):
        cfg = load_config("default", [*TINY_OVERRIDES, f"model.grid_view={grid}"])
        model = build_model(cfg.model, len(load_taxonomy()))
        ckpt = Checkpoint.for_model(model, cfg, load_taxonomy(), spec_of(cfg))
        del ckpt.config["model"]["grid_view"]  # a config without the field reads as the default ...
        if not grid:
            del ckpt.preprocess["grid_view"]  # ... and a spec from before the field existed as 0
        loaded = model_from_checkpoint(ckpt)  # the wrong view count would not fit the tag head
        assert loaded.grid_view == bool(grid) and loaded.views == 3 + grid
        assert loaded.grid_profile == bool(grid)
        assert torch.equal(loaded.tag_head.weight, model.tag_head.weight)
    # a grid view from before the profile: no profile, no MLP, the head as wide as it was trained
    cfg = load_config("default", [*TINY_OVERRIDES, "model.grid_profile=0"])
    model = build_model(cfg.model, len(load_taxonomy()))
    ckpt = Checkpoint.for_model(model, cfg, load_taxonomy(), spec_of(cfg))
    del ckpt.preprocess["grid_profile"], ckpt.config["model"]["grid_profile"]
    loaded = model_from_checkpoint(ckpt)
    assert loaded.grid_view and not loaded.grid_profile and loaded.grid_mlp is None
    assert torch.equal(loaded.tag_head.weight, model.tag_head.weight)


def test_the_grid_views_text_cover_is_read_off_its_size_ring_in_percent():
    from training.model import PROFILE_HIDDEN, CreativeModel

    torch.manual_seed(0)
    model = CreativeModel("test_resnet", num_tags=3, views=3, grid_view=True, grid_profile=True, text_cover=True).eval()
    plain = CreativeModel("test_resnet", num_tags=3, views=3, grid_view=True, grid_profile=True).eval()
    dim = model.backbone.num_features
    assert model.tag_head.in_features == 2 * dim + 7 + PROFILE_HIDDEN
    assert plain.tag_head.in_features == 2 * dim + 6 + PROFILE_HIDDEN
    x = torch.randint(0, 256, (2, 3, 32, 32, 3), dtype=torch.uint8)
    x[:, -1] = torch.tensor([64, 128, 128], dtype=torch.uint8)
    x[:, -1, 4:28, 4:28] = torch.tensor([140, 170, 0], dtype=torch.uint8)  # the size ring: no text
    x[:, -1, 8:24, 8:24] = torch.tensor([128, 128, 128], dtype=torch.uint8)
    with torch.no_grad():
        f = model.features(x)
        np.testing.assert_allclose(f[:, 2 * dim : 2 * dim + 7].numpy(), 0.0)  # the size is not read
        text = x.clone()
        text[:, -1, 4:28, 4:28, 2] = 120  # 30 % covered (400 levels per share)
        text[:, -1, 8:24, 8:24] = 128
        g = model.features(text)
        np.testing.assert_allclose(g[:, 2 * dim + 6].numpy(), [30.0, 30.0])
        assert not torch.allclose(model(text)[0], model(x)[0])
        assert torch.equal(plain(text)[0], plain(x)[0])  # a model without the field ignores the ring
