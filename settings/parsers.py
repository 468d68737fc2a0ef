"""Parsers and serializers of the settings whose values are not a plain number, string or boolean."""

import math

from absl import flags

from settings.choices import LOSS_TERMS


class LossWeightsSerializer(flags.ArgumentSerializer):
    def serialize(self, value):
        return ",".join(f"{term}={weight!r}" for term, weight in value.items())


class LossWeightsParser(flags.ArgumentParser):
    """`cross_entropy=1.0,l2=5e-4` -> {"cross_entropy": 1.0, "l2": 0.0005}."""

    value_type = dict[str, float]
    serializer = LossWeightsSerializer()

    def parse(self, argument):
        if isinstance(argument, dict):
            return argument
        weights = {}
        for item in filter(None, (part.strip() for part in argument.split(","))):
            term, equals, value = item.partition("=")
            if term not in LOSS_TERMS:
                raise ValueError(f"unknown loss term {term!r}; terms: {', '.join(LOSS_TERMS)}")
            if not equals:
                raise ValueError(f"give {term} a weight: {term}=<weight>")
            try:
                weights[term] = float(value)
            except ValueError:
                raise ValueError(f"the weight of {term} is not a number: {value!r}") from None
            if not weights[term] >= 0:
                raise ValueError(f"the weight of {term} must be a number >= 0, not {value!r}")
            if not math.isfinite(weights[term]):
                raise ValueError(f"the weight of {term} must be finite, not {value!r}")
        if not any(term != "l2" for term in weights):
            raise ValueError("name at least one of the data terms "
                             f"({', '.join(LOSS_TERMS[:-1])}), e.g. cross_entropy=1.0")
        return weights

    def flag_type(self):
        return "term=weight list"


class NumberListParser(flags.ArgumentParser):
    """`1000,2000` -> (1000, 2000) with numbers of one type; an empty string is the empty list."""

    serializer = flags.CsvListSerializer(",")

    def __init__(self, number_type: type):
        self.number_type = number_type
        self.value_type = tuple[number_type, ...]

    def parse(self, argument):
        if not isinstance(argument, str):
            return tuple(argument)
        try:
            numbers = tuple(self.number_type(part) for part in argument.split(",") if part.strip())
        except ValueError:
            raise ValueError(f"expected comma-separated {self.number_type.__name__}s, not {argument!r}") from None
        if not all(math.isfinite(number) for number in numbers):
            raise ValueError(f"expected finite numbers, not {argument!r}")
        return numbers

    def flag_type(self):
        return f"list of {self.number_type.__name__}s"


class ClassWeightsSerializer(flags.ArgumentSerializer):
    def serialize(self, value):
        return value if isinstance(value, str) else ",".join(map(repr, value))


class ClassWeightsParser(flags.ArgumentParser):
    """`none`, `balanced`, or one non-negative weight per class, comma-separated."""

    value_type = str | tuple[float, ...]
    serializer = ClassWeightsSerializer()

    def parse(self, argument):
        if not isinstance(argument, str) or argument in ("none", "balanced"):
            return argument
        try:
            weights = tuple(float(part) for part in argument.split(","))
        except ValueError:
            raise ValueError(f"expected none, balanced or comma-separated numbers, not {argument!r}") from None
        if not all(weight >= 0 for weight in weights) or not any(weights):
            raise ValueError(f"class weights must be >= 0 and not all 0, not {argument!r}")
        if not all(map(math.isfinite, weights)):
            raise ValueError(f"class weights must be finite, not {argument!r}")
        return weights

    def flag_type(self):
        return "none|balanced|w0,w1,..."


FLOAT_LIST = NumberListParser(float)
INTEGER_LIST = NumberListParser(int)
LOSS_WEIGHTS = LossWeightsParser()
CLASS_WEIGHTS = ClassWeightsParser()
