"""Load a deployment bundle and screen images with it — numpy, pillow and the one runtime the
bundle needs (OpenVINO or ONNX Runtime); no torch, timm, sqlalchemy or typer, so it runs on a
factory PC with only those installed.

    from defectopt.runtime.bundle import load_bundle
    from defectopt.runtime.predictor import Predictor
    predictor = Predictor(load_bundle("ship/"))
    for result in predictor.predict_paths(["img1.png", "img2.png"]):
        print(result.path, result.score, result.flagged)

`preprocess` is the one implementation of image -> model input: bench's evaluation, training's
views and predict all call it, so a bundle sees exactly what the model was measured on.
"""
