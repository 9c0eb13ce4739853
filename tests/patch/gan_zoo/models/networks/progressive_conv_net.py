"""pytorch_GAN_zoo's PGAN generator and discriminator: scales added with addScale, alpha = the OLD path's weight
(set with setNewAlpha), no D fade at the first transition (the repository's issue #98)."""
import math

import torch.nn.functional as F
from torch import nn

from .custom_layers import EqualizedConv2d, EqualizedLinear, NormalizationLayer, Upscale2d
from .mini_batch_stddev_module import miniBatchStdDev


def num_flat_features(x):
    return math.prod(x.size()[1:])


class GNet(nn.Module):
    def __init__(self, dimLatent, depthScale0, initBiasToZero=True, leakyReluLeak=0.2,  # noqa: N803
                 normalization=True, generationActivation=None, dimOutput=3, equalizedlR=True):
        super().__init__()
        self.equalizedlR = equalizedlR
        self.initBiasToZero = initBiasToZero
        self.scalesDepth = [depthScale0]
        self.scaleLayers = nn.ModuleList()
        self.toRGBLayers = nn.ModuleList()
        self.initFormatLayer(dimLatent)
        self.dimOutput = dimOutput
        self.groupScale0 = nn.ModuleList([self._conv(depthScale0, depthScale0, 3, padding=1)])
        self.toRGBLayers.append(self._conv(depthScale0, dimOutput, 1))
        self.alpha = 0
        self.leakyRelu = nn.LeakyReLU(leakyReluLeak)
        self.normalizationLayer = NormalizationLayer() if normalization else None
        self.generationActivation = generationActivation
        self.depthScale0 = depthScale0

    def _conv(self, cin, cout, k, padding=0):
        return EqualizedConv2d(cin, cout, k, padding=padding, equalized=self.equalizedlR,
                               initBiasToZero=self.initBiasToZero)

    def initFormatLayer(self, dimLatentVector):  # noqa: N802, N803
        """The dense latent -> 4 x 4 x depthScale0 layer, with one bias per unit (16 * depthScale0)."""
        self.dimLatent = dimLatentVector
        self.formatLayer = EqualizedLinear(dimLatentVector, 16 * self.scalesDepth[0], equalized=self.equalizedlR,
                                           initBiasToZero=self.initBiasToZero)

    def getOutputSize(self):  # noqa: N802
        side = 4 * 2 ** (len(self.toRGBLayers) - 1)
        return side, side

    def addScale(self, depthNewScale):  # noqa: N802, N803
        last = self.scalesDepth[-1]
        self.scalesDepth.append(depthNewScale)
        self.scaleLayers.append(nn.ModuleList([self._conv(last, depthNewScale, 3, padding=1),
                                               self._conv(depthNewScale, depthNewScale, 3, padding=1)]))
        self.toRGBLayers.append(self._conv(depthNewScale, self.dimOutput, 1))

    def setNewAlpha(self, alpha):  # noqa: N802
        if alpha < 0 or alpha > 1:
            raise ValueError("alpha must be in [0,1]")
        if not self.toRGBLayers:
            raise AttributeError("Can't set an alpha layer if only the scale 0 is defined")
        self.alpha = alpha

    def forward(self, x):
        if self.normalizationLayer is not None:
            x = self.normalizationLayer(x)
        x = x.view(-1, num_flat_features(x))
        x = self.leakyRelu(self.formatLayer(x))
        x = x.view(x.size()[0], -1, 4, 4)
        x = self.normalizationLayer(x)  # unconditional in the repository
        for conv in self.groupScale0:
            x = self.leakyRelu(conv(x))
            if self.normalizationLayer is not None:
                x = self.normalizationLayer(x)
        if self.alpha > 0 and len(self.scaleLayers) == 1:
            y = Upscale2d(self.toRGBLayers[-2](x))
        for scale, group in enumerate(self.scaleLayers):
            x = Upscale2d(x)
            for conv in group:
                x = self.leakyRelu(conv(x))
                if self.normalizationLayer is not None:
                    x = self.normalizationLayer(x)
            if self.alpha > 0 and scale == len(self.scaleLayers) - 2:
                y = Upscale2d(self.toRGBLayers[-2](x))
        x = self.toRGBLayers[-1](x)
        if self.alpha > 0:
            x = self.alpha * y + (1.0 - self.alpha) * x
        if self.generationActivation is not None:
            x = self.generationActivation(x)
        return x


class DNet(nn.Module):
    def __init__(self, depthScale0, initBiasToZero=True, leakyReluLeak=0.2, sizeDecisionLayer=1,  # noqa: N803
                 miniBatchNormalization=False, dimInput=3, equalizedlR=True):
        super().__init__()
        self.initBiasToZero = initBiasToZero
        self.equalizedlR = equalizedlR
        self.dimInput = dimInput
        self.scalesDepth = [depthScale0]
        self.scaleLayers = nn.ModuleList()
        self.fromRGBLayers = nn.ModuleList()
        self.mergeLayers = nn.ModuleList()
        self.initDecisionLayer(sizeDecisionLayer)
        self.groupScaleZero = nn.ModuleList()
        self.fromRGBLayers.append(self._conv(dimInput, depthScale0, 1))
        self.miniBatchNormalization = miniBatchNormalization
        entry = depthScale0 + (1 if miniBatchNormalization else 0)
        self.groupScaleZero.append(self._conv(entry, depthScale0, 3, padding=1))
        self.groupScaleZero.append(EqualizedLinear(depthScale0 * 16, depthScale0, equalized=equalizedlR,
                                                   initBiasToZero=initBiasToZero))
        self.alpha = 0
        self.leakyRelu = nn.LeakyReLU(leakyReluLeak)

    def _conv(self, cin, cout, k, padding=0):
        return EqualizedConv2d(cin, cout, k, padding=padding, equalized=self.equalizedlR,
                               initBiasToZero=self.initBiasToZero)

    def addScale(self, depthNewScale):  # noqa: N802, N803
        last = self.scalesDepth[-1]
        self.scalesDepth.append(depthNewScale)
        self.scaleLayers.append(nn.ModuleList([self._conv(depthNewScale, depthNewScale, 3, padding=1),
                                               self._conv(depthNewScale, last, 3, padding=1)]))
        self.fromRGBLayers.append(self._conv(self.dimInput, depthNewScale, 1))

    def setNewAlpha(self, alpha):  # noqa: N802
        if alpha < 0 or alpha > 1:
            raise ValueError("alpha must be in [0,1]")
        if not self.fromRGBLayers:
            raise AttributeError("Can't set an alpha layer if only the scale 0 is defined")
        self.alpha = alpha

    def initDecisionLayer(self, sizeDecisionLayer):  # noqa: N802, N803
        self.decisionLayer = EqualizedLinear(self.scalesDepth[0], sizeDecisionLayer, equalized=self.equalizedlR,
                                             initBiasToZero=self.initBiasToZero)

    def forward(self, x, getFeature=False):  # noqa: N803
        if self.alpha > 0 and len(self.fromRGBLayers) > 1:
            y = self.leakyRelu(self.fromRGBLayers[-2](F.avg_pool2d(x, (2, 2))))
        x = self.leakyRelu(self.fromRGBLayers[-1](x))
        merge = self.alpha > 0 and len(self.scaleLayers) > 1   # issue #98: no fade at the first transition
        for group in reversed(self.scaleLayers):
            for layer in group:
                x = self.leakyRelu(layer(x))
            x = nn.AvgPool2d((2, 2))(x)
            if merge:
                merge = False
                x = self.alpha * y + (1 - self.alpha) * x
        if self.miniBatchNormalization:
            x = miniBatchStdDev(x)
        x = self.leakyRelu(self.groupScaleZero[0](x))
        x = x.view(-1, num_flat_features(x))
        x = self.leakyRelu(self.groupScaleZero[1](x))
        out = self.decisionLayer(x)
        if not getFeature:
            return out
        return out, x
