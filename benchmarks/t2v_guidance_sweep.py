"""Text-to-video guidance sweep: the judge's direction and object accuracy of a trained video system's clips at
several CFG scales, through the harness's own ``evaluate_video`` (seed 1234, 50 clips a split).

Choose ``eval_args.video_cfg_scale`` on the validation split; report the test split.

    python benchmarks/t2v_guidance_sweep.py runs/emu3_l1/model --splits val,test --scales 1 2 3 5
"""

import argparse

import umm.models  # noqa: F401  (registers the systems)
import umm.pipelines  # noqa: F401
from umm.eval.harness import training_level
from umm.eval.video_eval import evaluate_video
from umm.models.system import load_system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--splits", default="val,test")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0, 3.0, 5.0])
    parser.add_argument("--n", type=int, default=50)
    args = parser.parse_args()
    model, system = load_system(args.model)
    level = training_level(args.model)
    for split in args.splits.split(","):
        for scale in args.scales:
            metrics, _ = evaluate_video(model, system, ("t2v",), split, 1234, args.n, 16, scale, level)
            print(f"{split:5s} CFG {scale:g}: direction {metrics['t2v/direction_accuracy']:.2f} "
                  f"objects {metrics['t2v/object_accuracy']:.2f}", flush=True)


if __name__ == "__main__":
    main()
