"""Ship check on a study DB: export a model to a bundle, screen the frozen test split with
`defectopt.runtime`, and count how many decisions equal the ones bench stored on the model's
test `recall` row for the bundle's runtime (image for image).

    python benchmarks/verify_bundle.py DB MODEL_ID OUT_DIR
"""
import json, sys, time
import numpy as np
from defectopt.store.db import open_store
from defectopt.store.schema import Measurement
from defectopt.data.catalog import get_dataset
from defectopt.deploy.api import export_bundle
from defectopt.deploy.options import ExportOptions
from defectopt.runtime.predictor import PredictOptions, predict
db, mid, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
store = open_store(db)
t0 = time.perf_counter()
folder = export_bundle(store, ExportOptions(model=str(mid), out=out, force=True))
print("export s", round(time.perf_counter() - t0, 2), folder, sorted(p.name for p in folder.iterdir()))
meta = json.loads((folder / "bundle.json").read_text())
with store.session() as s:
    rows = s.query(Measurement).filter_by(model_id=mid, metric="recall", batch_size=0).all()
    stored = {r.backend: np.asarray(r.extra["decisions"]) for r in rows}
backend = meta["runtime"]
from defectopt.models.artifacts import load_artifact
ds = get_dataset(store, load_artifact(store, mid).dataset_id)
paths = tuple(str(ds.root / r["path"]) for r in ds.split("test"))
res = predict(PredictOptions(bundle=str(folder), paths=paths, batch_size=1, threads=2))
classes = meta["classes"]
got = np.array([classes.index(r.predicted) for r in res.results]) if meta["task"] != "binary" else np.array([int(r.flagged) for r in res.results])
same = int((got == stored[backend]).sum())
print(f"format {meta['format']} runtime {backend}: {same}/{len(got)} decisions equal to bench's stored ones; {res.images_per_second:.1f} images/s (batch 1, incl. decode+preprocess)")
