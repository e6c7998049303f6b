"""Letters the tests add to the alphabet (sdekit.letters.CoordinateLetter), in one place.

Imported by tests/test_letters.py and tests/test_letters_kernels.py, and read as text by the
latter's CUDA-simulator child process.
"""
import numpy as np
from sdekit.letters import CoordinateLetter


def rotate(q, p, delta):            # the exact flow of dq = p dt, dp = -q dt (unit mass and frequency)
    c, s = np.cos(delta), np.sin(delta)
    return c * q + s * p, -s * q + c * p


def euler_ou(p, delta, gamma, sigma, sqrt_mass, z):   # Euler-Maruyama for dp = -gamma p dt + sigma M^1/2 dW
    return p - delta * gamma * p + np.sqrt(delta) * sigma * sqrt_mass * z


def exact_ou(p, delta, gamma, sigma, sqrt_mass, z):   # O's arithmetic (sdekit.operators.ou_coefficients, ou)
    x = 2.0 * gamma * delta
    zero = x == 0.0
    phi = -np.expm1(-x) / (x + zero) + zero
    c, s = np.exp(-gamma * delta), sigma * np.sqrt(delta * phi)
    return c * p + s * sqrt_mass * z


def noise(p, delta, sigma, sqrt_mass, z):             # p += sqrt(delta) sigma M^1/2 R
    return p + np.sqrt(delta) * sigma * sqrt_mass * z


def noise2(p, delta, sigma, sqrt_mass, z0, z1):       # two noise kicks of delta/2: N(h/2) N(h/2) in one letter
    a = np.sqrt(0.5 * delta) * sigma * sqrt_mass
    return (p + a * z0) + a * z1


class Rotation(CoordinateLetter):
    name, title, update = "H", "harmonic", "(q, p) rotated by ({f})"
    inputs = moves = ("q", "p")
    flow = staticmethod(rotate)


class EulerOU(CoordinateLetter):
    name, title, update = "E", "Euler OU", "p += -({f}) gamma p + sqrt({f}) sigma M^1/2 R"
    inputs = moves = ("p",)
    parameters = ("gamma", "sigma", "sqrt_mass")
    normals = 1
    flow = staticmethod(euler_ou)


class ExactOU(CoordinateLetter):
    name, title, update = "U", "user OU", "p = c p + s M^1/2 R over ({f})"
    inputs = moves = ("p",)
    parameters = ("gamma", "sigma", "sqrt_mass")
    normals = 1
    flow = staticmethod(exact_ou)


class Noise(CoordinateLetter):
    name, title, update = "N", "noise", "p += sqrt({f}) sigma M^1/2 R"
    inputs = moves = ("p",)
    parameters = ("sigma", "sqrt_mass")
    normals = 1
    flow = staticmethod(noise)


class Noise2(CoordinateLetter):
    name, title, update = "W", "two noises", "p += sqrt({f}/2) sigma M^1/2 (R1 + R2)"
    inputs = moves = ("p",)
    parameters = ("sigma", "sqrt_mass")
    normals = 2
    flow = staticmethod(noise2)


def square(q, p, delta):                              # not linear in p: sdekit.linear refuses it
    return q + delta * p * p


class Nonlinear(CoordinateLetter):
    name, title = "Y", "nonlinear drift"
    inputs, moves = ("q", "p"), ("q",)
    flow = staticmethod(square)


USER = (Rotation, EulerOU, ExactOU, Noise, Noise2)
